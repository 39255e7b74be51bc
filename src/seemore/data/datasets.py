"""The datasets by name: a built-in one, the path of a user's (data/user.py), or a weighted
mixture of them (data/mixture.py). Each offers the same few members:

- ``labelled(split, index)``: the index-th image of a split with its caption and questions
  (data/labelled.py); deterministic in (split, index)
- ``pair(split, index)``: (image, caption) of the same example, cheaper
- ``rng(split, index, stream)``: a generator for choices about that example
- ``size(split)``: how many distinct images a split holds (None: endless)
- ``question_types``, ``eval_splits``, ``parse_caption(text)`` (the caption's objects, for
  caption F1) and ``corpus()`` (text with every character the dataset can produce)
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from seemore.data.digits import Digits
from seemore.data.mixture import Mixture, parse_sources
from seemore.data.shapes import ShapesWorld
from seemore.data.user import UserDataset
from seemore.errors import UserError

DATASETS = {"shapes": ShapesWorld, "digits": Digits}


def question_types(spec: str) -> tuple[str, ...]:
    """The question types of the dataset or mixture data.dataset names, without opening it."""
    classes = [DATASETS.get(name, UserDataset) for name, _ in parse_sources(spec)]
    return tuple(dict.fromkeys(t for c in classes for t in c.question_types))


def task_names(config) -> tuple[str, ...]:
    """The tasks a run (a seemore.config.Config) trains on: data.tasks, or all of the
    dataset's tasks ("caption" and its question types) and "draw" when the model draws.
    Checks data.tasks and data.tasks_per_image against them."""
    d = config.data
    own = ("caption", *question_types(d.dataset))
    unknown = set(d.tasks) - {*own, "draw"}
    if unknown:
        raise UserError(f"data.tasks: {', '.join(sorted(unknown))} is not a task of "
                        f"data.dataset={d.dataset}; choose from {', '.join(own)}, draw")
    n_tasks = len(d.tasks or own)
    if d.tasks_per_image > n_tasks:
        raise UserError(f"data.tasks_per_image must be between 1 and {n_tasks}, or 0 for all "
                        "of them")
    names = d.tasks or own + (("draw",) if config.train.vq_from else ())
    if "draw" in names and d.tasks_per_image != 1:
        raise UserError("data.tasks_per_image must be 1 when the model draws")
    return names


def tasks_per_image(config) -> int:
    """data.tasks_per_image, with 0 resolved to every task of the run."""
    return config.data.tasks_per_image or len(task_names(config))


def open_dataset(name: str, image_size: int, image_column: str = "", policy: str = "squash",
                 on_bad: str = "error", num_workers: int = 0, context: int = 0,
                 n_visual: int = 0) -> ShapesWorld | Digits | UserDataset | Mixture:
    """A built-in dataset by name, a user's dataset by path (read once per version of its
    files: opening one decodes all of its images), or a mixture of them ("a:3,b:1")."""
    sources = parse_sources(name)
    if len(sources) > 1 or sources[0][1] != 1.0:
        members = {n: open_dataset(n, image_size, image_column, policy, on_bad, num_workers,
                                   context, n_visual) for n, _ in sources}
        if len(members) < len(sources):
            raise UserError(f"data.dataset={name!r} names a source twice")
        return Mixture(members, [w for _, w in sources])
    name = sources[0][0]
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


def members(data) -> dict[str, Any]:
    """The datasets a dataset is made of: a mixture's members, or itself (named "")."""
    return data.members if isinstance(data, Mixture) else {"": data}


def missing(data, split: str) -> str:
    """Why no member of a dataset has examples in a split, or "" when one has some."""
    parts = members(data).values()
    empty = [m for m in parts if m.size(split) == 0]  # only a user's dataset can be empty
    return "; ".join(m.why_empty(split) for m in empty) if len(empty) == len(parts) else ""


def data_workers(requested: int, device_type: str) -> int:
    """How many DataLoader workers make the data: data.num_workers, or for -1, none when
    the model trains on the CPU and up to 8 (one core per process left to train) on a GPU.
    On a 2-core CPU a worker process cost more than it saved (the default run's samples/s
    0.92-0.96 of rendering in process); on a GPU, rendering in process held the default
    run near the CPU's pace, and 8 workers trained 2,360 samples/s (README)."""
    if requested >= 0:
        return requested
    if device_type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    per_process = (cores or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(0, min(8, per_process - 1))


def dataset_of(config) -> ShapesWorld | Digits | UserDataset | Mixture:
    """The dataset a run's config names (a seemore.config.Config)."""
    d = config.data
    workers = data_workers(d.num_workers, "cuda" if torch.cuda.is_available() else "cpu")
    return open_dataset(d.dataset, config.model.vision.image_size, d.image_column, d.resize,
                        d.on_bad_sample, workers, config.model.decoder.max_seq_len,
                        config.model.n_visual_tokens)
