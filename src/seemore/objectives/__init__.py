"""The training objectives by name. A run's train.objective picks one; the loop, the CLI
and model folders look it up here and ask it for everything that differs between them
(objectives/base.py says what). A new objective is a module in this package defining an
Objective subclass, and one line in OBJECTIVES."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn
from torch.utils.data import Dataset

from seemore.config import Config
from seemore.errors import UserError
from seemore.objectives.base import Objective
from seemore.objectives.clip import ClipObjective
from seemore.objectives.lm import LMObjective
from seemore.objectives.vlm import VLMObjective
from seemore.objectives.vq import VQObjective

OBJECTIVES: dict[str, Objective] = {
    o.name: o for o in (VLMObjective(), ClipObjective(), LMObjective(), VQObjective())}


def objective_of(config: Config) -> Objective:
    name = config.train.objective
    if name not in OBJECTIVES:
        raise UserError(f"train.objective must be one of {', '.join(OBJECTIVES)}, got {name!r}")
    return OBJECTIVES[name]


def build_model(config: Config) -> nn.Module:
    """A freshly initialised model of the run's objective, with its tokenizer."""
    return objective_of(config).build(config)


def training_data(model: nn.Module, config: Config, split: str = "train",
                  length: int | None = None) -> tuple[Dataset, Callable]:
    """The examples of the run's objective, as in training, and their collate: length of
    them (default: enough for every step) from a split of the dataset."""
    length = length or config.train.steps * config.train.batch_size
    return objective_of(config).data(model, config, split, length)
