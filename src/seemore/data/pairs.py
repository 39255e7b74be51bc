"""(image, caption) pairs for contrastive training and retrieval, from either built-in
dataset, and the batches of them the CLIP objective consumes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from seemore.data.images import to_tensor
from seemore.prompt import caption_ids
from seemore.tokenizer import Tokenizer


class CaptionPairs(Dataset):
    """The (image, caption) pairs of a split of a built-in dataset, as (tensor, text)."""

    def __init__(self, data, split: str, length: int):
        """data: a dataset (data/datasets.py)."""
        self.data, self.split, self.length = data, split, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        image, caption = self.data.pair(self.split, i)
        return to_tensor(image), caption


@dataclass
class PairBatch:
    images: torch.Tensor  # (B, 3, H, W)
    ids: torch.Tensor  # (B, T): <bos> caption <eos>, right-padded
    eos: torch.Tensor  # (B,): where each row's <eos> is

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(self.images.to(device), self.ids.to(device), self.eos.to(device))


def collate_pairs(items: list[tuple[torch.Tensor, str]], tokenizer: Tokenizer) -> PairBatch:
    ids, eos = caption_ids(tokenizer, [text for _, text in items])
    return PairBatch(torch.stack([image for image, _ in items]), ids, eos)


def collate_images(items: list[tuple[torch.Tensor, str]]) -> torch.Tensor:
    """The images of (image, caption) pairs, stacked (B, 3, H, W): the VQ-VAE's batch."""
    return torch.stack([image for image, _ in items])
