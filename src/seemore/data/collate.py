"""Training examples drawn from a dataset, and the batches the loop consumes.

An image's training example is a conversation about it (prompt.py has the token formats):
its tasks (the caption, questions of different types) one after another, the image once
at the start, with data.tasks_per_image tasks (the default preset: all seven; 1: one
question or the caption alone). The first turn is exactly the prompt a user's question
makes; the later ones are the turns of a chat. The image is encoded once and every task
of it is supervised, so a step of seven tasks per image costs far less than seven steps of
one. A drawing (text-to-image) example holds placeholders where the image's codes go; the
model fills them (and their labels) from its VQ-VAE, on the device (models/vlm.py). With
probability data.uncond_share its caption is left out, for classifier-free guidance.
Only the answers (and their <eos>) are supervised: the image, the questions and the
padding never contribute to the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from seemore.data.digits import Digits
from seemore.data.images import to_tensor
from seemore.data.shapes import ShapesWorld
from seemore.errors import UserError
from seemore.prompt import (
    CAPTION_PROMPT,
    IGNORE_INDEX,
    Sequence,
    conversation_sequence,
    drawing_sequence,
)
from seemore.tokenizer import Tokenizer


class TaskDataset(Dataset):
    """Images ``offset .. offset+length-1`` of one split of a dataset. Each carries
    ``per_image`` of the named tasks ("caption" and question types) that it has, drawn at
    random but deterministically per image, as a conversation in a random order; an
    example with a multi-turn conversation of its own is trained on that instead.

    With one task per image, each run of ``group`` consecutive images (set it to the batch
    size) is all drawings, all captions or all questions: drawings in draw_share of the
    groups, captions in their fair share of the rest. A batch of short questions padded to
    the length of one caption costs three times as much, and a batch without drawings
    leaves out the VQ-VAE, one without visual tokens the ViT.
    """

    def __init__(self, data: ShapesWorld | Digits, split: str, tokenizer: Tokenizer,
                 n_visual: int, tasks: tuple[str, ...], per_image: int, length: int,
                 group: int = 1, offset: int = 0, n_codes: int = 0, draw_share: float = 0.5,
                 uncond_share: float = 0.1):
        self.data, self.split, self.tokenizer = data, split, tokenizer
        self.n_visual, self.tasks, self.per_image = n_visual, tasks, per_image
        self.length, self.group, self.offset = length, group, offset
        self.n_codes, self.draw_share, self.uncond_share = n_codes, draw_share, uncond_share

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Sequence]:
        index = self.offset + i
        example = self.data.labelled(self.split, index)
        if example.conversation:
            return to_tensor(example.image), conversation_sequence(
                self.tokenizer, self.n_visual, example.conversation)
        available = {kind: (q, a) for kind, q, a in example.questions}
        if example.caption:
            available["caption"] = available["draw"] = (CAPTION_PROMPT, example.caption)
        kinds = [k for k in self.tasks if k in available]
        if not kinds:
            raise UserError(f"a {self.split} example has none of the tasks "
                            f"{', '.join(self.tasks)} (data.tasks)")
        group_rng = self.data.rng(self.split, index // self.group, stream=3)
        rng = self.data.rng(self.split, index, stream=2)
        if self.per_image == 1 and "draw" in kinds and len(kinds) > 1:
            draws = group_rng.random() < self.draw_share
            kinds = ["draw"] if draws else [k for k in kinds if k != "draw"]
        if kinds == ["draw"]:
            return to_tensor(example.image), drawing_sequence(
                self.tokenizer, example.caption, self.n_codes, rng.random() < self.uncond_share)
        if self.per_image == 1 and "caption" in kinds and len(kinds) > 1:
            n_text_tasks = len([t for t in self.tasks if t != "draw"])
            captions = group_rng.random() < 1 / n_text_tasks
            kinds = ["caption"] if captions else [k for k in kinds if k != "caption"]
        chosen = rng.choice(len(kinds), size=min(self.per_image, len(kinds)), replace=False)
        turns = [available[kinds[c]] for c in chosen]
        return to_tensor(example.image), conversation_sequence(self.tokenizer, self.n_visual,
                                                               turns)


@dataclass
class Batch:
    images: torch.Tensor | None  # (B, 3, H, W); None for text only
    ids: torch.Tensor  # (B, T), right-padded
    labels: torch.Tensor  # (B, T)
    # whether some row holds visual tokens / draws its image: known when the batch is
    # built, so the model need not look at the ids on the device (a host sync) to decide
    sees: bool = False
    draws: bool = False

    def to(self, device: torch.device) -> Batch:
        return Batch(None if self.images is None else self.images.to(device),
                     self.ids.to(device), self.labels.to(device), self.sees, self.draws)


def collate(items: list[tuple[torch.Tensor, Sequence]], pad_id: int) -> Batch:
    """Stack images; right-pad ids (pad_id) and labels (IGNORE_INDEX). Right padding is
    invisible to the real tokens under causal attention."""
    width = max(len(seq.ids) for _, seq in items)

    def pad(rows: list[list[int]], value: int) -> torch.Tensor:
        return torch.tensor([row + [value] * (width - len(row)) for row in rows])

    seqs = [seq for _, seq in items]
    return Batch(torch.stack([image for image, _ in items]), pad([s.ids for s in seqs], pad_id),
                 pad([s.labels for s in seqs], IGNORE_INDEX), any(s.sees for s in seqs),
                 any(s.draws for s in seqs))
