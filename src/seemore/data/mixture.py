"""Several datasets drawn together: each example comes from one of them, chosen at random
(deterministically by split and index) with probability proportional to its weight.

    seemore train --data shapes:3 --data photos.csv:1    # data.dataset=shapes:3,photos.csv:1

A source without a weight weighs 1. The mixture offers the interface of the datasets it
mixes (data/datasets.py); evaluation reports each of them on its own.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from seemore.data.labelled import Labelled, example_rng
from seemore.errors import UserError

# "SOURCE:WEIGHT"; a colon followed by anything but a number belongs to the source's name
_WEIGHTED = re.compile(r"(.+):([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)", re.IGNORECASE)


def parse_sources(spec: str) -> list[tuple[str, float]]:
    """[(source, weight)] from "a:3,b" (weight 1 where none is given)."""
    sources = []
    for part in spec.split(","):
        name, weight = part.strip(), 1.0
        if match := _WEIGHTED.fullmatch(name):
            name, weight = match[1], float(match[2])
        if not name:
            raise UserError(f"data.dataset={spec!r}: an empty source")
        if not weight > 0:
            raise UserError(f"data.dataset={spec!r}: the weight of {name} must be positive, "
                            f"got {weight:g}")
        sources.append((name, weight))
    return sources


class Mixture:
    eval_splits = ("test",)

    def __init__(self, members: dict[str, Any], weights: list[float]):
        self.members = members
        self.p = np.array(weights) / sum(weights)
        self.split_p: dict[str, np.ndarray | None] = {}  # self.p over the members with the split
        self.question_types = tuple(dict.fromkeys(
            t for m in members.values() for t in m.question_types))

    rng = staticmethod(example_rng)

    def member(self, split: str, index: int):
        """The dataset the index-th example of a split comes from, among the members that
        have examples in it (a user's small dataset may have no test rows)."""
        members = list(self.members.values())
        if split not in self.split_p:  # once per split: this runs for every example
            p = self.p * [m.size(split) != 0 for m in members]
            self.split_p[split] = p / p.sum() if p.any() else None
        p = self.split_p[split]
        if p is None:  # every member is empty here: let the first say why
            return members[0]
        return members[self.rng(split, index, stream=9).choice(len(p), p=p)]

    def labelled(self, split: str, index: int) -> Labelled:
        return self.member(split, index).labelled(split, index)

    def pair(self, split: str, index: int) -> tuple[np.ndarray, str]:
        return self.member(split, index).pair(split, index)

    def size(self, split: str) -> int | None:
        sizes = [m.size(split) for m in self.members.values()]
        return None if None in sizes else sum(sizes)

    def corpus(self) -> str:
        return "".join(m.corpus() for m in self.members.values())
