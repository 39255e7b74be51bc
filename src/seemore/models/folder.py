"""A model folder: config.json, model.safetensors and tokenizer.json (for a model that reads
text), no pickles. Which model it holds is its objective's to say (objectives/load.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_model, save_model

from seemore.config import Config
from seemore.errors import UserError
from seemore.tokenizer import Tokenizer, load_tokenizer


class FolderModel(nn.Module):
    """A model that is saved as a model folder: what every seemore model is. Its config is
    the model's own (model.* of a run); run, the whole config of the run it comes from
    (config.json), is set by its objective when it builds or loads the model."""

    run: Config

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def save_pretrained(self, folder: str | Path) -> None:
        """Write config.json, model.safetensors and, for a model that reads text,
        tokenizer.json."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.run.save(folder / "config.json")
        if getattr(self, "tokenizer", None) is not None:
            self.tokenizer.save(folder / "tokenizer.json")
        save_model(self, str(folder / "model.safetensors"))


def _require(folder: Path, name: str) -> Path:
    if not (folder / name).is_file():
        raise UserError(f"{folder} is not a seemore model folder: {name} is missing")
    return folder / name


def read_config(folder: str | Path) -> Config:
    folder = Path(folder)
    path = _require(folder, "config.json")
    _require(folder, "model.safetensors")
    try:
        return Config.load(path)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{folder}: unreadable config.json ({e})") from None


def read_tokenizer(folder: str | Path) -> Tokenizer:
    folder = Path(folder)
    try:
        return load_tokenizer(_require(folder, "tokenizer.json"))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{folder}: unreadable tokenizer.json ({e})") from None


def load_weights(model: nn.Module, folder: str | Path, device: str | torch.device) -> None:
    path = Path(folder) / "model.safetensors"
    try:
        load_model(model, str(path), device=str(device))
    except Exception as e:  # safetensors raises several types for corrupt or foreign files
        raise UserError(f"{path}: cannot load weights ({e})") from None
