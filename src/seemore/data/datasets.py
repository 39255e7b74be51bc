"""The datasets by name: a built-in one, or the path of a user's (data/user.py). Each class
offers the same few members:

- ``labelled(split, index)``: the index-th image of a split with its caption and questions
  (data/labelled.py); deterministic in (split, index)
- ``pair(split, index)``: (image, caption) of the same example, cheaper
- ``rng(split, index, stream)``: a generator for choices about that example
- ``size(split)``: how many distinct images a split holds (None: endless)
- ``question_types``, ``eval_splits``, ``parse_caption(text)`` (the caption's objects, for
  caption F1) and ``corpus()`` (text with every character the dataset can produce)
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from seemore.data.digits import Digits
from seemore.data.shapes import ShapesWorld
from seemore.data.user import UserDataset
from seemore.errors import UserError

DATASETS = {"shapes": ShapesWorld, "digits": Digits}


def dataset_class(name: str) -> type:
    return DATASETS.get(name, UserDataset)


def open_dataset(name: str, image_size: int, image_column: str = "", policy: str = "squash",
                 on_bad: str = "error", num_workers: int = 0, context: int = 0,
                 n_visual: int = 0) -> ShapesWorld | Digits | UserDataset:
    """A built-in dataset by name, or a user's dataset by path (read once per version of
    its files: opening one decodes all of its images)."""
    if name in DATASETS:
        return DATASETS[name](image_size)
    path = Path(name)
    if not path.exists():
        raise UserError(f"{name}: no such dataset; give {', '.join(DATASETS)} or the path of "
                        "a .csv, .jsonl or .json file or an image folder")
    versions = tuple(p.stat().st_mtime_ns for p in (path, *path.glob("metadata.*")))
    return _open_user(path.resolve(), versions, image_size, image_column, policy, on_bad,
                      num_workers, context, n_visual)


@lru_cache(maxsize=4)
def _open_user(path: Path, versions: tuple, image_size: int, image_column: str, policy: str,
               on_bad: str, num_workers: int, context: int, n_visual: int) -> UserDataset:
    return UserDataset(path, image_size, image_column, policy, on_bad, num_workers,
                       context=context, n_visual=n_visual)


def dataset_of(config) -> ShapesWorld | Digits | UserDataset:
    """The dataset a run's config names (a seemore.config.Config)."""
    d = config.data
    return open_dataset(d.dataset, config.model.vision.image_size, d.image_column, d.resize,
                        d.on_bad_sample, d.num_workers, config.model.decoder.max_seq_len,
                        config.model.n_visual_tokens)
