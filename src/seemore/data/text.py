"""Plain text for language-model pretraining of the decoder: any UTF-8 file, or by default
text written by the built-in dataset (captions, and questions followed by their answers),
so the recipe needs no download. Training examples are windows of the text at positions drawn
at random, deterministically by index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from seemore.data.collate import Batch
from seemore.errors import UserError
from seemore.tokenizer import Tokenizer

WORLD_IMAGES = 2000  # train images whose text makes the default corpus (0.4 MB of shapes)


def world_text(data, n_images: int = WORLD_IMAGES) -> str:
    """The captions, and questions followed by their answers, of a dataset's first
    n_images train images (data/datasets.py)."""
    lines = []
    for i in range(n_images):
        example = data.labelled("train", i)
        lines.append(example.caption)
        lines.extend(f"{q} {a}" for _, q, a in example.questions)
    return "\n".join(lines) + "\n"


def read_text(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such text file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    if not text.strip():
        raise UserError(f"{path}: the text file is empty")
    return text


class TextWindows(Dataset):
    """length windows of window + 1 tokens each (inputs and their next tokens)."""

    def __init__(self, text: str, tokenizer: Tokenizer, window: int, length: int,
                 seed: int = 0):
        self.ids = torch.tensor(tokenizer.encode(text, what="training text"), dtype=torch.long)
        if len(self.ids) <= window:
            raise UserError(f"the training text has {len(self.ids)} characters; the decoder's "
                            f"context needs more than {window}")
        self.window, self.length, self.seed = window, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> torch.Tensor:
        start = np.random.default_rng((self.seed, i)).integers(len(self.ids) - self.window)
        return self.ids[start : start + self.window + 1]


def collate_text(windows: list[torch.Tensor]) -> Batch:
    """A text-only Batch: no images, every position a target."""
    rows = torch.stack(windows)
    return Batch(None, rows[:, :-1], rows[:, 1:])
