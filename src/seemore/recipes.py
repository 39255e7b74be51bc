"""Training recipes: a named sequence of stages, each a list of config overrides applied to
the preset (the user's own overrides come last and win).

    end-to-end   the VLM trains on captions and questions at once (the original seemore)
    clip         the ViT and a text encoder learn a joint space by contrastive learning
"""

from __future__ import annotations

from seemore.config import Config, apply_overrides
from seemore.errors import UserError

RECIPES: dict[str, list[list[str]]] = {
    "end-to-end": [[]],
    "clip": [["train.objective=clip", "train.steps=1000", "train.batch_size=128",
              "train.lr=1e-3"]],
}


def recipe_stages(name: str, preset: Config, overrides: list[str]) -> list[Config]:
    """The config of every stage of a recipe."""
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    return [apply_overrides(preset, stage + overrides) for stage in RECIPES[name]]
