"""The built-in datasets by name. Each class offers the same few members:

- ``labelled(split, index)``: the index-th image of a split with its caption and questions
  (data/labelled.py); deterministic in (split, index)
- ``pair(split, index)``: (image, caption) of the same example, cheaper
- ``rng(split, index, stream)``: a generator for choices about that example
- ``size(split)``: how many distinct images a split holds (None: endless)
- ``question_types``, ``eval_splits``, ``parse_caption(text)`` (the caption's objects, for
  caption F1) and ``corpus()`` (text with every character the dataset can produce)
"""

from __future__ import annotations

from seemore.data.digits import Digits
from seemore.data.shapes import ShapesWorld

DATASETS = {"shapes": ShapesWorld, "digits": Digits}


def open_dataset(name: str, image_size: int) -> ShapesWorld | Digits:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name](image_size)
