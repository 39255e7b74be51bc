"""What every built-in dataset gives for one of its images: the image, its caption and its
questions. Training, evaluation and the CLI read the datasets through this alone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Labelled:
    image: np.ndarray  # (H, W, 3) uint8
    caption: str  # "" when the data has none for this image
    questions: list[tuple[str, str, str]]  # (question type, question, answer)
    # a multi-turn conversation, (question, answer) pairs trained as one sequence
    conversation: tuple[tuple[str, str], ...] = ()
    location: str = ""  # where a user's row is (file:line), for messages
