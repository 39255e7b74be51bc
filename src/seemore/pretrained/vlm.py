"""A seemore VLM assembled from a pretrained vision tower and a pretrained decoder (what
`seemore import` writes): the tower and the decoder with their checkpoints' weights, the
decoder's own tokenizer with <image> added, and a freshly initialised projector between
them, its input the tower's width and its output the decoder's. The staged recipe
(recipes.py, "pretrained") then trains the projector alone and then projector and decoder,
as LLaVA and nanoVLM do.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from seemore.config import MoEConfig, ProjectorConfig, apply_overrides, get_preset
from seemore.errors import UserError
from seemore.models.projector import Projector
from seemore.models.vlm import VLM
from seemore.pretrained.decoder import add_image_token, load_decoder, pretrained_tokenizer
from seemore.pretrained.vision import load_vision


def import_vlm(vision: str | Path, decoder: str | Path, overrides: list[str] = ()) -> VLM:
    """The VLM of a Hugging Face vision tower folder (SigLIP or CLIP) and decoder folder
    (Llama or Qwen2), in fp32 (the weights that training updates), on the CPU. Its run
    config is the default preset's with the checkpoints' tower, decoder and tokenizer, a
    projector reading every patch, and the overrides (key=value) applied; an override of
    the tower's or the decoder's shape is refused, as the weights fix them."""
    tower = load_vision(vision, torch.float32)
    text = add_image_token(load_decoder(decoder, torch.float32))
    tokenizer = pretrained_tokenizer(decoder)
    base = get_preset("default")
    model = dataclasses.replace(base.model, vision=tower.config, decoder=text.config,
                                projector=ProjectorConfig(), moe=MoEConfig(),
                                tokenizer="pretrained")
    config = apply_overrides(dataclasses.replace(base, model=model), list(overrides))
    for part in ("vision", "decoder", "tokenizer"):
        if getattr(config.model, part) != getattr(model, part):
            raise UserError(f"model.{part} comes from the checkpoints and cannot be "
                            "overridden on import")
    with torch.device("meta"):  # every component is replaced below
        vlm = VLM(config.model, tokenizer, config.data.resize)
    vlm.vision, vlm.decoder, vlm.projector = tower, text, Projector(config.model)
    vlm.run = config
    return vlm.eval()
