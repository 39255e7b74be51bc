"""Loading a model folder (models/folder.py) as the model its objective trains, and copying
components of one into another model (train.init_from, train.vision_from)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from seemore.device import resolve_device
from seemore.errors import UserError
from seemore.layers.lora import merge_lora
from seemore.models.folder import load_adapters, load_weights, read_config, read_tokenizer
from seemore.objectives import objective_of


def load_folder(folder: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The model saved in folder, on device, in eval mode."""
    device = resolve_device(device)
    config = read_config(folder)
    objective = objective_of(config)
    tokenizer = read_tokenizer(folder) if objective.reads_text else None
    model = objective.model(config, tokenizer)
    load_weights(model, folder, device)
    load_adapters(model, folder, device)
    return model.to(device).eval()


def load_components(model: nn.Module, folder: str | Path,
                    only: tuple[str, ...] | None = None) -> list[str]:
    """Copy into model every component (a top-level submodule: vision, projector, decoder,
    text) that the model folder also holds, or only the named ones; returns their names.
    A component must match in every shape, and one that reads text (decoder, text) needs
    the same tokenizer."""
    source = load_folder(folder, "cpu")
    merge_lora(source)  # a run adapted with LoRA continues from its merged weights
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
