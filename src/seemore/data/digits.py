"""scikit-learn's bundled handwritten digits as a dataset of captioned images.

1,797 greyscale 8x8 scans of the digits 0-9 (``sklearn.datasets.load_digits``, shipped
inside scikit-learn: no download), drawn white on black and upsampled to the model's image
size. Every image has the caption "a handwritten seven" and two questions: "what digit is
this?" ("seven") and "is this a three?" ("no"; the digit asked about is the image's own in
half of the images, at random).

Splits are fixed by index: every fifth image (index % 5 == 0) is test, the next is val, the
other three fifths are train. A train index past the end of the split wraps around with a
different random shift, so training can draw as many examples as it needs; val and test
images are never shifted.
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np
from PIL import Image

from seemore.data.labelled import FOLDS, Labelled
from seemore.errors import UserError

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
QUESTION = "what digit is this?"
QUESTION_TYPES = ("digit", "verify")
MAX_SHIFT = 1 / 8  # of the image side: one pixel of the original 8x8 scan


@cache
def _load() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError("the digits dataset needs scikit-learn: pip install scikit-learn") from None
    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64)


def split_indices(split: str) -> np.ndarray:
    """Indices into load_digits() of one split."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown digits split {split!r}; choose train, val or test")
    n = len(_load()[1])
    fold = np.arange(n) % 5
    if split == "train":
        return np.flatnonzero(fold >= 2)
    return np.flatnonzero(fold == FOLDS[split])


def caption(label: int) -> str:
    return f"a handwritten {NAMES[label]}"


_CAPTION_RE = re.compile(rf"a handwritten ({'|'.join(NAMES)})\b")


def parse_caption(text: str) -> list[str]:
    """The digits a caption names."""
    return _CAPTION_RE.findall(text)


def verify_question(label: int) -> str:
    return f"is this a{'n' if NAMES[label][0] in 'aeiou' else ''} {NAMES[label]}?"


def corpus() -> str:
    """Every character the dataset's text can hold (for building a tokenizer)."""
    lines = [QUESTION, "yes", "no"]
    for d in range(len(NAMES)):
        lines += [caption(d), verify_question(d)]
    return "\n".join(lines)


class Digits:
    question_types = QUESTION_TYPES
    eval_splits = ("test",)
    parse_caption = staticmethod(parse_caption)
    corpus = staticmethod(corpus)

    def __init__(self, image_size: int = 64):
        if image_size < 8:
            raise UserError(f"model.vision.image_size must be at least 8 for the digits, got "
                            f"{image_size}")
        self.image_size = image_size

    def __len__(self) -> int:
        return len(_load()[1])

    def size(self, split: str) -> int:
        return len(split_indices(split))

    def rng(self, split: str, index: int, stream: int = 0) -> np.random.Generator:
        split_indices(split)  # checks the name
        return np.random.default_rng((("train", "val", "test").index(split), index, stream))

    def labelled(self, split: str, index: int) -> Labelled:
        image, label = self.scan(split, index)
        rng = self.rng(split, index, stream=1)
        other = (label + int(rng.integers(1, len(NAMES)))) % len(NAMES)
        asked = label if rng.random() < 0.5 else other
        questions = [("digit", QUESTION, NAMES[label]),
                     ("verify", verify_question(asked), "yes" if asked == label else "no")]
        return Labelled(image, caption(label), questions)

    def regions(self, split: str, index: int) -> list[tuple[tuple[float, ...], dict[str, str]]]:
        """The whole image and its digit: what probe.py asks the image features to tell."""
        return [((0.0, 0.0, 1.0, 1.0), {"digit": NAMES[self.scan(split, index)[1]]})]

    def pair(self, split: str, index: int) -> tuple[np.ndarray, str]:
        image, label = self.scan(split, index)
        return image, caption(label)

    def scan(self, split: str, index: int) -> tuple[np.ndarray, int]:
        """(image (H, W, 3) uint8, label) of the index-th image of a split."""
        indices = split_indices(split)
        images, labels = _load()
        i = indices[index % len(indices)]
        repeat = index // len(indices) if split == "train" else 0
        shift = np.random.default_rng((repeat, int(i))) if repeat else None
        return self.render(images[i], shift), int(labels[i])

    def render(self, scan: np.ndarray, shift: np.random.Generator | None = None) -> np.ndarray:
        """The scan upsampled to image_size, shifted by up to one scan pixel when given a
        random generator."""
        s = self.image_size
        pixels = Image.fromarray((scan * 255).astype(np.uint8)).resize(
            (s, s), Image.Resampling.BILINEAR)
        if shift is not None:
            dx, dy = (shift.uniform(-MAX_SHIFT, MAX_SHIFT, size=2) * s).round().astype(int)
            pixels = pixels.transform((s, s), Image.Transform.AFFINE, (1, 0, dx, 0, 1, dy))
        grey = np.asarray(pixels)
        return np.repeat(grey[:, :, None], 3, axis=2)
