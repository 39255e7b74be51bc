"""The token formats the model reads and writes, and nothing else: a prompt about an image,
a conversation as one training sequence, a drawing sequence, and a CLIP caption.

    prompt        <bos> <image> x M question "\n"            the model writes answer <eos>
    conversation  <bos> <image> x M q1 "\n" a1 <eos> q2 "\n" a2 <eos> ...
    drawing       <bos> caption <boi> code x N <eoi>
    CLIP caption  <bos> caption <eos>

Labels are aligned with the ids and already shifted (labels[t] is the token at t+1 where
that token is supervised, IGNORE_INDEX elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seemore.errors import UserError
from seemore.tokenizer import Tokenizer

IGNORE_INDEX = -100
SEPARATOR = "\n"  # ends the question; the answer follows it
CAPTION_PROMPT = "describe the image."


def question_ids(tokenizer: Tokenizer, question: str) -> list[int]:
    """The question and the separator."""
    if not isinstance(question, str):
        raise UserError(f"the question must be text, got {type(question).__name__}")
    question = question.strip()
    if not question:
        raise UserError("the question is empty")
    return tokenizer.encode(question, what="question") + tokenizer.encode(SEPARATOR)


def prompt_ids(tokenizer: Tokenizer, n_visual: int, question: str) -> list[int]:
    """<bos>, one <image> per visual token, the question and the separator."""
    return [tokenizer.bos_id] + [tokenizer.image_id] * n_visual + question_ids(tokenizer,
                                                                               question)


@dataclass
class Sequence:
    """One training sequence: its ids and their labels, of the same length; whether it holds
    the image's visual tokens (sees) and whether it draws the image (draws)."""

    ids: list[int]
    labels: list[int]
    sees: bool = False
    draws: bool = False


def conversation_sequence(tokenizer: Tokenizer, n_visual: int,
                          turns: tuple[tuple[str, str], ...] | list[tuple[str, str]]
                          ) -> Sequence:
    """One image and a conversation about it, (question, answer) turns, as one causal
    sequence: the image once after <bos>, the loss on the answers (and their <eos>)."""
    ids = [tokenizer.bos_id] + [tokenizer.image_id] * n_visual
    labels = [IGNORE_INDEX] * len(ids)
    for question, answer in turns:
        prompt = question_ids(tokenizer, question)
        target = tokenizer.encode(answer, what="answer") + [tokenizer.eos_id]
        # the last prompt token predicts target[0]; <eos> predicts nothing
        labels += [IGNORE_INDEX] * (len(prompt) - 1) + target + [IGNORE_INDEX]
        ids += prompt + target
    return Sequence(ids, labels, sees=n_visual > 0)


def conversation_length(turns: tuple[tuple[str, str], ...], n_visual: int) -> int:
    """len(conversation_sequence(...).ids) for a character tokenizer, without one."""
    return 1 + n_visual + sum(len(q.strip()) + len(SEPARATOR) + len(a) + 1 for q, a in turns)


def drawing_sequence(tokenizer: Tokenizer, caption: str, n_codes: int,
                     uncond: bool) -> Sequence:
    """<bos> caption <boi> placeholder x n_codes <eoi>, the caption left out when uncond.
    The labels hold only the last code's target, <eoi>; the model writes the codes."""
    text = [] if uncond else tokenizer.encode(caption, what="caption")
    ids = [tokenizer.bos_id, *text, tokenizer.boi_id, *[tokenizer.code_ids[0]] * n_codes,
           tokenizer.eoi_id]
    labels = [IGNORE_INDEX] * (len(ids) - 2) + [tokenizer.eoi_id, IGNORE_INDEX]
    return Sequence(ids, labels, draws=True)


def caption_ids(tokenizer: Tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T) of '<bos> caption <eos>' and the index of each <eos> (B,)."""
    rows = [[tokenizer.bos_id, *tokenizer.encode(text, what="caption"), tokenizer.eos_id]
            for text in texts]
    ids = torch.full((len(rows), max(map(len, rows))), tokenizer.pad_id, dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
    return ids, torch.tensor([len(row) - 1 for row in rows])
