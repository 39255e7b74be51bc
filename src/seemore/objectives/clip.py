"""Contrastive pretraining of the ViT with a text encoder (models/clip.py), evaluated by
image-text retrieval."""

from __future__ import annotations

from functools import partial

from seemore.data.datasets import dataset_of, missing
from seemore.data.pairs import CaptionPairs, collate_pairs
from seemore.evaluation.retrieval import evaluate_clip, format_clip_table
from seemore.models.clip import CLIP
from seemore.objectives.base import Objective, with_tokenizer


class ClipObjective(Objective):
    name = "clip"
    model_class = CLIP

    def build(self, config):
        return self.model(*with_tokenizer(config))

    def data(self, model, config, split, length):
        pairs = CaptionPairs(dataset_of(config), split, length)
        return pairs, partial(collate_pairs, tokenizer=model.tokenizer)

    def validate(self, model, config):
        if missing(dataset_of(config), "val"):
            return None  # the final evaluation says why
        result = evaluate_clip(model, "val", config.train.eval_scenes)["val"]
        return result, f"val image->text recall@5 {result['image_to_text']['recall@5']:.3f}"

    def evaluate(self, model, n_scenes):
        if reason := missing(dataset_of(model.run), "test"):
            return {"skipped": {"test": reason}}
        return evaluate_clip(model, "test", max(n_scenes, 1000))

    def table(self, results):
        return format_clip_table(results)
