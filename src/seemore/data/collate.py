"""Token sequences for training and the batches the loop consumes.

A sequence is  <bos> <image> x M  question "\\n"  answer <eos>.  Labels are aligned with the
inputs and already shifted: labels[t] is the token at t+1 when that token belongs to the
answer (its <eos> included), and IGNORE_INDEX otherwise, so the image, the question and the
padding never contribute to the loss.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from seemore.data.images import to_tensor
from seemore.data.shapes import SPLITS, ShapesWorld
from seemore.errors import UserError
from seemore.tokenizer import CharTokenizer

IGNORE_INDEX = -100
SEPARATOR = "\n"  # ends the question; the answer follows it
CAPTION_PROMPT = "describe the image."


def prompt_ids(tokenizer: CharTokenizer, n_visual: int, question: str) -> list[int]:
    """<bos>, one <image> per visual token, then the question and the separator."""
    question = question.strip()
    if not question:
        raise UserError("the question is empty")
    text = tokenizer.encode(question, what="question") + tokenizer.encode(SEPARATOR)
    return [tokenizer.bos_id] + [tokenizer.image_id] * n_visual + text


def training_sequence(tokenizer: CharTokenizer, n_visual: int, question: str, answer: str
                      ) -> tuple[list[int], list[int]]:
    """(ids, labels) for one example; see the module docstring for the label layout."""
    prompt = prompt_ids(tokenizer, n_visual, question)
    target = tokenizer.encode(answer, what="answer") + [tokenizer.eos_id]
    ids = prompt + target[:-1]
    labels = [IGNORE_INDEX] * (len(prompt) - 1) + target
    return ids, labels


class ShapesDataset(Dataset):
    """Examples ``offset .. offset+length-1`` of one split of the shapes world.

    Examples come in groups of ``group`` consecutive indices (set it to the batch size) that
    are either all captions or all questions, a caption_fraction of the groups being
    captions: a batch of short questions is then not padded to the length of a long caption,
    which would make it about three times as costly.
    """

    def __init__(self, world: ShapesWorld, split: str, tokenizer: CharTokenizer, n_visual: int,
                 caption_fraction: float, length: int, group: int = 1, offset: int = 0):
        self.world, self.split, self.tokenizer = world, split, tokenizer
        self.n_visual, self.caption_fraction = n_visual, caption_fraction
        self.length, self.group, self.offset = length, group, offset

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, list[int], list[int]]:
        index = self.offset + i
        group_rng = np.random.default_rng((SPLITS[self.split], index // self.group, 3))
        is_caption = bool(group_rng.random() < self.caption_fraction)
        image, question, answer = self.world.example(self.split, index, is_caption,
                                                     CAPTION_PROMPT)
        ids, labels = training_sequence(self.tokenizer, self.n_visual, question, answer)
        return to_tensor(image), ids, labels


def collate(batch: list[tuple[torch.Tensor, list[int], list[int]]], pad_id: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack images and right-pad ids (with pad_id) and labels (with IGNORE_INDEX)."""
    width = max(len(ids) for _, ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for row, (_, seq, lab) in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, : len(lab)] = torch.tensor(lab)
    return torch.stack([image for image, _, _ in batch]), ids, labels
