"""Token sequences for training and the batches the loop consumes.

A prompt is  <bos> question "\n" <image> x M  and the model writes the answer and <eos>.
The image comes after the question, so the visual tokens can read the question as they pass
through the decoder: each one can work out whether it holds the object asked about, and the
answer position sits at a fixed distance from every visual token. (With the image first, the
decoder has to learn to search 16 tokens from a variable distance, which took it about six
times as many examples to start using the image at all.)

In training an image carries one task by default. With data.tasks_per_image above 1 it
carries several (its caption, questions of different types) packed into one sequence; the
image is encoded once and its visual tokens are written into every task:

    <bos> | question1 \n <image> x M answer1 <eos> | question2 \n <image> x M answer2 <eos> | ...
    seg 0   segment 1                               segment 2

Each task attends to <bos> and to its own earlier tokens only, and its RoPE positions
restart after <bos>, so every task is computed exactly as if it were alone (tested). It
saves image encodings, but the explicit mask makes a step slower at our sizes.

A drawing (text-to-image) example is  <bos> caption <boi> code x N <eoi>: the model writes
the image's N codes after the caption. The data holds placeholders where the codes go; the
model fills them (and their labels) from its VQ-VAE, on the device (models/vlm.py). With
probability data.uncond_share the caption is left out, for classifier-free guidance.

Labels are aligned with the inputs and already shifted: labels[t] is the token at t+1 when
that token belongs to an answer (its <eos> included), IGNORE_INDEX otherwise, so the image,
the questions and the padding never contribute to the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from seemore.data.digits import Digits
from seemore.data.images import to_tensor
from seemore.data.shapes import ShapesWorld
from seemore.errors import UserError
from seemore.tokenizer import Tokenizer

IGNORE_INDEX = -100
SEPARATOR = "\n"  # ends the question; the answer follows it
CAPTION_PROMPT = "describe the image."
PAD_SEGMENT = -1


def prompt_ids(tokenizer: Tokenizer, n_visual: int, question: str) -> list[int]:
    """<bos>, the question, the separator, then one <image> per visual token."""
    return [tokenizer.bos_id] + task_prompt(tokenizer, n_visual, question)


def task_prompt(tokenizer: Tokenizer, n_visual: int, question: str) -> list[int]:
    question = question.strip()
    if not question:
        raise UserError("the question is empty")
    text = tokenizer.encode(question, what="question") + tokenizer.encode(SEPARATOR)
    return text + [tokenizer.image_id] * n_visual


@dataclass
class Sequence:
    """One packed training sequence; all lists have the same length."""

    ids: list[int]
    labels: list[int]
    positions: list[int]  # RoPE positions: restart after <bos> in every segment
    segments: list[int]  # 0 for <bos>, 1, 2, ... for the tasks


def training_sequence(tokenizer: Tokenizer, n_visual: int,
                      tasks: list[tuple[str, str]]) -> Sequence:
    """The packed sequence for one image and its (question, answer) tasks."""
    seq = Sequence([tokenizer.bos_id], [IGNORE_INDEX], [0], [0])
    for segment, (question, answer) in enumerate(tasks, start=1):
        prompt = task_prompt(tokenizer, n_visual, question)
        target = tokenizer.encode(answer, what="answer") + [tokenizer.eos_id]
        ids = prompt + target
        seq.ids += ids
        # the last prompt token predicts target[0]; <eos> predicts nothing
        seq.labels += [IGNORE_INDEX] * (len(prompt) - 1) + target + [IGNORE_INDEX]
        seq.positions += range(1, 1 + len(ids))
        seq.segments += [segment] * len(ids)
    return seq


def drawing_sequence(tokenizer: Tokenizer, caption: str, n_codes: int,
                     uncond: bool) -> Sequence:
    """<bos> caption <boi> placeholder x n_codes <eoi>, the caption left out when uncond.
    The labels hold only the last code's target, <eoi>; the model writes the codes."""
    text = [] if uncond else tokenizer.encode(caption, what="caption")
    ids = [tokenizer.bos_id, *text, tokenizer.boi_id, *[tokenizer.code_ids[0]] * n_codes,
           tokenizer.eoi_id]
    labels = [IGNORE_INDEX] * (len(ids) - 2) + [tokenizer.eoi_id, IGNORE_INDEX]
    return Sequence(ids, labels, list(range(len(ids))), [0] + [1] * (len(ids) - 1))


def conversation_sequence(tokenizer: Tokenizer, n_visual: int,
                          turns: tuple[tuple[str, str], ...]) -> Sequence:
    """One image and a multi-turn conversation about it, as one causal sequence:

        <bos> question1 \n <image> x M answer1 <eos> question2 \n answer2 <eos> ...

    The image comes once, after the first question; the loss is on the answers (and their
    <eos>) only. Every token is one segment, so plain causal attention applies."""
    ids, labels = [tokenizer.bos_id], [IGNORE_INDEX]
    for i, (question, answer) in enumerate(turns):
        prompt = task_prompt(tokenizer, n_visual if i == 0 else 0, question)
        target = tokenizer.encode(answer, what="answer") + [tokenizer.eos_id]
        ids += prompt + target
        labels += [IGNORE_INDEX] * (len(prompt) - 1) + target + [IGNORE_INDEX]
    return Sequence(ids, labels, list(range(len(ids))), [0] + [1] * (len(ids) - 1))


def conversation_length(turns: tuple[tuple[str, str], ...], n_visual: int) -> int:
    """len(conversation_sequence(...).ids) for a character tokenizer, without one."""
    return 1 + sum(len(q.strip()) + len(SEPARATOR) + len(a) + 1 for q, a in turns) + n_visual


def attention_mask(segments: torch.Tensor) -> torch.Tensor:
    """Boolean (B, 1, T, T) mask from segment ids (B, T): causal, and a task token sees
    <bos> (segment 0) and its own segment. A padding token sees only itself, so that no row
    of the softmax is empty."""
    T = segments.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=segments.device).tril()
    same = segments[:, :, None] == segments[:, None, :]  # (B, T, T)
    prefix = (segments == 0)[:, None, :]  # (B, 1, T)
    real = (segments != PAD_SEGMENT)[:, None, :]
    eye = torch.eye(T, dtype=torch.bool, device=segments.device)
    return ((causal & (same | prefix) & real) | eye).unsqueeze(1)


class TaskDataset(Dataset):
    """Images ``offset .. offset+length-1`` of one split of a dataset. Each carries
    ``per_image`` of the named tasks ("caption" and question types) that it has, drawn at
    random but deterministically per image, packed into one sequence; an example with a
    multi-turn conversation is trained on that instead.

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
        tasks = [available[kinds[c]] for c in chosen]
        return to_tensor(example.image), training_sequence(self.tokenizer, self.n_visual, tasks)


@dataclass
class Batch:
    images: torch.Tensor | None  # (B, 3, H, W); None for text only
    ids: torch.Tensor  # (B, T), right-padded
    labels: torch.Tensor  # (B, T)
    positions: torch.Tensor | None  # (B, T); None: 0, 1, 2, ...
    mask: torch.Tensor | None  # (B, 1, T, T); None when no row packs several tasks

    def to(self, device: torch.device) -> Batch:
        return Batch(*(None if t is None else t.to(device) for t in (
            self.images, self.ids, self.labels, self.positions, self.mask)))


def collate(items: list[tuple[torch.Tensor, Sequence]], pad_id: int) -> Batch:
    """Stack images; right-pad ids (pad_id), labels (IGNORE_INDEX) and segments."""
    width = max(len(seq.ids) for _, seq in items)

    def pad(rows: list[list[int]], value: int) -> torch.Tensor:
        out = torch.full((len(rows), width), value, dtype=torch.long)
        for r, row in enumerate(rows):
            out[r, : len(row)] = torch.tensor(row)
        return out

    seqs = [seq for _, seq in items]
    segments = pad([s.segments for s in seqs], PAD_SEGMENT)
    # one task per row: right padding is invisible to the real tokens under plain causal
    # attention, which is much faster than an explicit mask
    packed = any(max(s.segments) > 1 for s in seqs)
    return Batch(torch.stack([image for image, _ in items]), pad([s.ids for s in seqs], pad_id),
                 pad([s.labels for s in seqs], IGNORE_INDEX), pad([s.positions for s in seqs], 0),
                 attention_mask(segments) if packed else None)
