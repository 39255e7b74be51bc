"""What every training objective provides: its model, its data, its evaluation and what a
finished run shows. The training loop, the CLI and model folders ask the objective of a
run for these, so nothing outside this package compares objective names."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import torch.nn as nn
from torch.utils.data import Dataset

from seemore.config import Config
from seemore.data.datasets import dataset_of
from seemore.data.text import read_text
from seemore.errors import UserError
from seemore.models.folder import read_tokenizer
from seemore.prompt import CAPTION_PROMPT, SEPARATOR
from seemore.tokenizer import BPETokenizer, CharTokenizer, PretrainedTokenizer, Tokenizer


class Objective(ABC):
    """One way to train: subclasses set name and model_class and define build and data;
    the other methods have defaults for an objective without them."""

    name: str
    model_class: type[nn.Module]  # what a model folder of this objective holds
    reads_text = True  # whether its model has a tokenizer (saved as tokenizer.json)
    images = True  # whether it trains on the dataset's images (a language model: text)
    answers = False  # whether its model captions and answers questions about images

    @abstractmethod
    def build(self, config: Config) -> nn.Module:
        """A freshly initialised model for the config."""

    def model(self, config: Config, tokenizer: Tokenizer | None) -> nn.Module:
        """The model of a run's config and tokenizer, freshly initialised (a saved folder's
        weights load into it); it takes the model config, and keeps the run's as model.run."""
        model = self.make(config, tokenizer)
        model.run = config
        return model

    def make(self, config: Config, tokenizer: Tokenizer | None) -> nn.Module:
        """The model class built from what it takes of the run's config."""
        return self.model_class(config.model, tokenizer)

    @abstractmethod
    def data(self, model: nn.Module, config: Config, split: str,
             length: int) -> tuple[Dataset, Callable]:
        """length training examples from a split, and the collate that batches them."""

    def validate(self, model: nn.Module, config: Config) -> tuple[dict, str] | None:
        """The periodic val result and a one-line summary of it; None: there is none."""
        return None

    def evaluate(self, model: nn.Module, n_scenes: int) -> dict | None:
        """The final evaluation (eval.json); None: the objective has none."""
        return None

    def table(self, results: dict) -> str:
        """The final evaluation as printed: one line per split by default."""
        return "\n".join(f"{split}: {result}" for split, result in results.items())

    def show(self, model: nn.Module, folder: Path) -> str:
        """Show what the trained model does (after training); returns a command to try."""
        return f"seemore eval {folder}"

    def unused_parameters(self, config: Config) -> bool:
        """Whether a step can leave parameters without gradients (DDP must be told)."""
        return config.model.moe.num_experts > 0

    def record(self, model: nn.Module) -> dict:
        """Entries of the model's own for the training log."""
        return {}


def build_tokenizer(config: Config) -> Tokenizer:
    """The tokenizer of everything the training data can say (its characters, or BPE
    learned from it), and the image codes when the model draws."""
    text = dataset_of(config).corpus()
    if config.data.text_file:
        text += read_text(config.data.text_file)
    codes = config.model.vq.codebook_size if config.train.vq_from else 0
    text += "\n" + CAPTION_PROMPT + SEPARATOR
    if config.model.tokenizer == "bpe":
        return BPETokenizer.from_text(text, config.model.bpe_vocab_size, codes)
    return CharTokenizer.from_text(text, codes)


def with_tokenizer(config: Config) -> tuple[Config, Tokenizer]:
    """The run's tokenizer, and the config with the decoder's vocabulary sized to it. A
    pretrained tokenizer is the one of the model folder the run starts from."""
    if config.model.tokenizer == "pretrained":
        if not config.train.init_from:
            raise UserError("model.tokenizer=pretrained takes the tokenizer of the model "
                            "folder that train.init_from names (one written by seemore "
                            "import), and none is named")
        tokenizer = read_tokenizer(config.train.init_from[0])
        if not isinstance(tokenizer, PretrainedTokenizer):
            raise UserError(f"train.init_from: {config.train.init_from[0]} has a "
                            f"{tokenizer.kind} tokenizer, not a pretrained one")
    else:
        tokenizer = build_tokenizer(config)
    decoder = dataclasses.replace(config.model.decoder, vocab_size=len(tokenizer))
    return dataclasses.replace(
        config, model=dataclasses.replace(config.model, decoder=decoder)), tokenizer
