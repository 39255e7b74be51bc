"""Evaluation of a VLM on a built-in dataset: VQA exact-match accuracy and caption object-F1.

The result for one split has a stable form, written to ``eval.json`` per split:

    {"vqa_accuracy": {"overall": 0.93, "color": 0.99, "shape": ..., "size": ...,
                      "position": ..., "count": ..., "exist": ...},
     "caption_object_f1": 0.9, "n_images": 500, "n_questions": 2980,
     "blind": {"overall": 0.41, "color": 0.2, ...}}

with one accuracy per question type of the dataset (the digits have "digit" and "verify").
"blind" holds the accuracies with every image replaced by a blank one (the ViT's mean
colour): how much of each score the image earns, against what the question alone gives.
Caption object-F1 is micro-averaged: an object counts as found when a predicted object has
the same shape, colour, size and position (for the digits: the same digit).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable

import numpy as np
import torch

from seemore.data.datasets import dataset_of
from seemore.data.images import to_tensor
from seemore.errors import UserError
from seemore.generation import generate_text
from seemore.prompt import CAPTION_PROMPT


def caption_f1(predicted: list[str], truth: list[str], parse: Callable[[str], list]) -> float:
    """Micro-averaged F1 of the objects parse finds in the predicted and true captions."""
    tp = n_pred = n_true = 0
    for p, t in zip(predicted, truth, strict=True):
        pred, true = Counter(parse(p)), Counter(parse(t))
        tp += sum((pred & true).values())
        n_pred += sum(pred.values())
        n_true += sum(true.values())
    return 2 * tp / (n_pred + n_true) if n_pred + n_true else 0.0


def blank_image(model) -> np.ndarray:
    """A uniform image of the ViT's mean colour, which it normalises to zero: no content."""
    size = model.config.vision.image_size
    mean = np.array(model.config.vision.image_mean) * 255
    return np.broadcast_to(mean.round().astype(np.uint8), (size, size, 3)).copy()


def vqa_accuracy(kinds: list[str], answers: list[str], truths: list[str],
                 question_types: tuple[str, ...]) -> dict[str, float]:
    """Exact-match accuracy overall and per question type."""
    right, total = defaultdict(int), defaultdict(int)
    for kind, answer, truth in zip(kinds, answers, truths, strict=True):
        total[kind] += 1
        right[kind] += answer == truth
    accuracy = {"overall": sum(right.values()) / max(1, len(answers))}
    accuracy.update({k: right[k] / total[k] for k in question_types if total[k]})
    return accuracy


def _answer(model, images: list, prompts: list[str], max_new_tokens: int,
            batch_size: int) -> list[str]:
    out = []
    for i in range(0, len(prompts), batch_size):
        pixels = torch.stack([to_tensor(im) for im in images[i:i + batch_size]])
        ids = [model.prompt_ids(q) for q in prompts[i:i + batch_size]]
        out += generate_text(model, ids, pixels.to(model.device), max_new_tokens)
    return out


@torch.no_grad()
def evaluate(model, split: str, n_images: int, with_captions: bool = True,
             batch_size: int = 256, data=None, blind: bool = False) -> dict:
    """Greedy answers to every question of images 0..n_images-1 of a split of the run's
    dataset, or of data (all of the split if it holds fewer), and (with_captions) a caption
    of each that has one; with blind, the answers to the same questions about a blank
    image too."""
    was_training = model.training
    model.eval()
    data = data or dataset_of(model.run)
    n_images = min(n_images, data.size(split) or n_images)
    examples = [data.labelled(split, i) for i in range(n_images)]
    for i, e in enumerate(examples):
        text = e.caption + "".join(q + a for _, q, a in e.questions)
        if unknown := model.tokenizer.unknown_chars(text):
            raise UserError(f"{e.location or f'{split} image {i}'}: characters the tokenizer "
                            f"does not know: {''.join(sorted(set(unknown)))!r}; the model "
                            "cannot read or write them")
    kinds, images, questions, truths = [], [], [], []
    for example in examples:
        # a conversation's first turn is a plain question; later ones need their history
        first = [("answer", *example.conversation[0])] if example.conversation else []
        for kind, q, a in example.questions + first:
            kinds.append(kind)
            images.append(example.image)
            questions.append(q)
            truths.append(a)
    # room for the longest true answer and its <eos>: a longer answer is wrong anyway
    answer_tokens = 1 + max((len(model.tokenizer.encode(t)) for t in truths), default=0)
    answers = _answer(model, images, questions, answer_tokens, batch_size)
    accuracy = vqa_accuracy(kinds, answers, truths, data.question_types)
    result = {"vqa_accuracy": accuracy, "n_images": n_images, "n_questions": len(answers)}
    if blind:
        blank = [blank_image(model)] * len(questions)
        answers = _answer(model, blank, questions, answer_tokens, batch_size)
        result["blind"] = vqa_accuracy(kinds, answers, truths, data.question_types)

    captioned = [e for e in examples if e.caption]
    if with_captions and captioned:
        predicted = _answer(model, [e.image for e in captioned], [CAPTION_PROMPT] * len(captioned),
                            model.caption_tokens, batch_size)
        result["caption_object_f1"] = caption_f1(
            predicted, [e.caption for e in captioned], data.parse_caption)
    model.train(was_training)
    return result


def format_table(results: dict[str, dict]) -> str:
    """A plain-text table: one row per split (and one for its blind answers), one column per
    metric; then a line for each split that could not be evaluated, saying why."""
    skipped = results.get("skipped", {})
    results = {split: r for split, r in results.items() if split != "skipped"}
    notes = [f"{split}: not evaluated: {why}" for split, why in skipped.items()]
    if not results:
        return "\n".join(notes)
    columns = list(dict.fromkeys(c for r in results.values() for c in r["vqa_accuracy"]))
    width = max(14, *(len(split) + 8 for split in results))
    header = f"{'split':<{width}}" + "".join(f"{c:>9}" for c in columns) + f"{'caption F1':>12}"
    lines = [header, "-" * len(header)]
    for split, r in results.items():
        rows = [(split, r["vqa_accuracy"], r.get("caption_object_f1", float("nan")))]
        if "blind" in r:
            rows.append((f"{split} blind", r["blind"], float("nan")))
        for name, acc, f1 in rows:
            row = f"{name:<{width}}" + "".join(f"{acc.get(c, float('nan')):>9.3f}"
                                               for c in columns)
            lines.append(row + (f"{f1:>12.3f}" if f1 == f1 else f"{'':>12}"))
    return "\n".join(lines + notes)
