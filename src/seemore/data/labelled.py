"""What every built-in dataset gives for one of its images: the image, its caption and its
questions. Training, evaluation and the CLI read the datasets through this alone."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

# a dataset split into folds (the digits into five by index, a user's rows into ten by
# content): fold 0 is test, fold 1 val, the rest train
FOLDS = {"test": 0, "val": 1}


def example_rng(split: str, index: int, stream: int = 0) -> np.random.Generator:
    """A generator for the choices about one example (which tasks, their order), seeded by
    its split's name, its index and a stream number."""
    return np.random.default_rng((zlib.crc32(split.encode()), index, stream))


@dataclass(frozen=True)
class Labelled:
    image: np.ndarray  # (H, W, 3) uint8
    caption: str  # "" when the data has none for this image
    questions: list[tuple[str, str, str]]  # (question type, question, answer)
    # a multi-turn conversation, (question, answer) pairs trained as one sequence
    conversation: tuple[tuple[str, str], ...] = ()
    location: str = ""  # where a user's row is (file:line), for messages
