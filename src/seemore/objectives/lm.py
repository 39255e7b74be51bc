"""The VLM's decoder trained alone on plain text (data.text_file, else text the dataset
writes): a language model, continued with `seemore generate`."""

from __future__ import annotations

from pathlib import Path

from seemore.data.datasets import dataset_of
from seemore.data.text import TextWindows, collate_text, read_text, world_text
from seemore.models.vlm import VLM
from seemore.objectives.base import Objective, with_tokenizer


class LMObjective(Objective):
    name = "lm"
    model_class = VLM
    images = False

    def build(self, config):
        return self.model(*with_tokenizer(config))

    def data(self, model, config, split, length):
        d = config.data
        text = read_text(d.text_file) if d.text_file else world_text(dataset_of(config))
        return TextWindows(text, model.tokenizer, config.model.decoder.max_seq_len, length,
                           config.train.seed), collate_text

    def show(self, model, folder: Path) -> str:
        return f'seemore generate {folder} "what "'

    def unused_parameters(self, config):
        return True  # the ViT and the projector see no text
