"""A model folder: config.json, model.safetensors and tokenizer.json (for a model that reads
text), no pickles. Which model it holds is its objective's to say (objectives/load.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model, save_file, save_model

from seemore.config import Config
from seemore.errors import UserError
from seemore.layers.lora import adapters, add_lora, without_adapters
from seemore.tokenizer import Tokenizer, load_tokenizer

ADAPTERS_FILE = "adapters.safetensors"


class FolderModel(nn.Module):
    """A model that is saved as a model folder: what every seemore model is. Its config is
    the model's own (model.* of a run); run, the whole config of the run it comes from
    (config.json), is set by its objective when it builds or loads the model."""

    run: Config

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def save_pretrained(self, folder: str | Path) -> None:
        """Write config.json, model.safetensors, for a model that reads text tokenizer.json,
        and for one with LoRA adapters adapters.safetensors (model.safetensors holds the
        weights they adapt). Each is written under a temporary name first and renamed when all
        are written, so that a full disk leaves a model already there as it was."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)

        def weights(path: Path) -> None:
            with without_adapters(self):
                save_model(self, str(path))

        writers = {"config.json": self.run.save, "model.safetensors": weights}
        if getattr(self, "tokenizer", None) is not None:
            writers["tokenizer.json"] = self.tokenizer.save
        if tensors := adapters(self):
            writers[ADAPTERS_FILE] = lambda path: save_file(
                {k: v.detach().contiguous() for k, v in tensors.items()}, str(path))
        temporary = {name: folder / f".{name}.tmp" for name in writers}
        try:
            for name, write in writers.items():
                write(temporary[name])
        except (OSError, SafetensorError) as e:
            for path in temporary.values():
                path.unlink(missing_ok=True)
            raise UserError(f"{folder}: could not write the model ({e}; is the disk full?); "
                            "what the folder held before is unchanged") from None
        for name, path in temporary.items():
            path.replace(folder / name)
        if not tensors:  # a merged model's folder keeps no adapters of an earlier save
            (folder / ADAPTERS_FILE).unlink(missing_ok=True)


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
    """Load model.safetensors into model; a file that does not fit it is a one-line error
    naming the first tensor that differs."""
    path = Path(folder) / "model.safetensors"
    try:
        with safe_open(str(path), "pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as e:  # safetensors raises several types for corrupt or foreign files
        raise UserError(f"{path}: cannot load weights ({e})") from None
    for name, value in model.state_dict().items():
        if name in shapes and shapes[name] != tuple(value.shape):
            raise UserError(f"{path}: {name} has shape {shapes[name]} in the file but "
                            f"{tuple(value.shape)} in the model config.json describes (the "
                            "two do not belong together)")
    missing, unexpected = load_model(model, str(path), strict=False, device=str(device))
    for names, verb, other in ((missing, "lacks", "has"), (unexpected, "holds", "lacks")):
        if names:
            more = f" and {len(names) - 1} more tensors" if len(names) > 1 else ""
            raise UserError(f"{path}: {verb} {min(names)}{more}, which the model config.json "
                            f"describes {other} (the two do not belong together)")


def load_adapters(model: nn.Module, folder: str | Path, device: str | torch.device) -> bool:
    """Give model the LoRA adapters of folder's adapters.safetensors, as its config's
    train.lora* settings describe them; returns whether the folder has any."""
    path = Path(folder) / ADAPTERS_FILE
    if not path.is_file():
        return False
    t = model.run.train
    if not t.lora:
        raise UserError(f"{path}: adapters, but config.json sets no train.lora rank")
    try:
        tensors = load_file(str(path), device=str(device))
    except Exception as e:  # safetensors raises several types for corrupt or foreign files
        raise UserError(f"{path}: cannot load adapters ({e})") from None
    add_lora(model, t.lora_targets, t.lora, t.lora_alpha)
    ours = adapters(model)
    if set(tensors) != set(ours):
        different = sorted(set(tensors) ^ set(ours))
        raise UserError(f"{path}: its adapters are not the ones config.json describes (first "
                        f"different: {different[0]})")
    with torch.no_grad():
        for name, value in tensors.items():
            if value.shape != ours[name].shape:
                raise UserError(f"{path}: {name} has shape {tuple(value.shape)}, not the "
                                f"{tuple(ours[name].shape)} config.json describes")
            ours[name].copy_(value)
    return True
