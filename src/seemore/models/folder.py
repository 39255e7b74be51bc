"""A model folder: config.json, model.safetensors and tokenizer.json, no pickles. It holds a
VLM, a CLIP model or a VQ-VAE (which reads no text, so has no tokenizer.json);
config.json's train.objective says which."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from seemore.config import Config
from seemore.errors import UserError
from seemore.tokenizer import load_tokenizer

FILES = ("config.json", "model.safetensors", "tokenizer.json")


def save_folder(model, folder: str | Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save(folder / "config.json")
    if hasattr(model, "tokenizer"):
        model.tokenizer.save(folder / "tokenizer.json")
    save_model(model, str(folder / "model.safetensors"))


def load_folder(folder: str | Path, device: str | torch.device = "cpu"):
    """The model saved in folder, on device, in eval mode."""
    from seemore.models.clip import CLIP
    from seemore.models.vlm import VLM
    from seemore.models.vq import VQVAE

    folder = Path(folder)
    for name in FILES[:2]:
        if not (folder / name).is_file():
            raise UserError(f"{folder} is not a seemore model folder: {name} is missing")
    try:
        config = Config.load(folder / "config.json")
        if config.train.objective == "vq":
            model = VQVAE(config)
        else:
            if not (folder / FILES[2]).is_file():
                raise UserError(f"{folder} is not a seemore model folder: {FILES[2]} is "
                                "missing")
            tokenizer = load_tokenizer(folder / "tokenizer.json")
            model = (CLIP if config.train.objective == "clip" else VLM)(config, tokenizer)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{folder}: unreadable config.json or tokenizer.json ({e})") from None
    try:
        load_model(model, str(folder / "model.safetensors"), device=str(device))
    except Exception as e:  # safetensors raises several types for corrupt or foreign files
        raise UserError(f"{folder / 'model.safetensors'}: cannot load weights ({e})") from None
    return model.to(device).eval()


def load_components(model, folder: str | Path, only: tuple[str, ...] | None = None
                    ) -> list[str]:
    """Copy into model every component (a top-level submodule: vision, projector, decoder,
    text) that the model folder also holds, or only the named ones; returns their names.
    A component must match in every shape, and one that reads text (decoder, text) needs
    the same tokenizer."""
    source = load_folder(folder, "cpu")
    theirs = dict(source.named_children())
    loaded = []
    for component, module in model.named_children():
        if component not in theirs or (only is not None and component not in only):
            continue
        if component in ("decoder", "text") and source.tokenizer != model.tokenizer:
            raise UserError(f"{folder}: its {component} was trained with a different "
                            "tokenizer than this model's")
        try:
            module.load_state_dict(theirs[component].state_dict())
        except RuntimeError as e:
            first = str(e).strip().splitlines()[-1].strip()
            raise UserError(f"{folder}: its {component} does not fit this model, the two "
                            f"configs differ ({first})") from None
        loaded.append(component)
    missing = set(only or ()) - set(loaded)
    if missing:
        raise UserError(f"{folder} holds no {', '.join(sorted(missing))} to load")
    return loaded
