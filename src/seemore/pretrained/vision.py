"""Vision towers from Hugging Face folders: SigLIP and CLIP (model_type "siglip_vision_model"
and "clip_vision_model", or the vision half of a whole "siglip" or "clip" checkpoint), as
seemore's own ViT.

Both are our ViT with other settings (config.VisionConfig): SigLIP has no class token and a
norm after its last block, GELU with the tanh approximation; CLIP has a class token, a
patch convolution without bias, a norm before its first block and none after (its
"post_layernorm" serves only its pooled output, which a VLM does not use), and QuickGELU.
The pixel statistics come from preprocessor_config.json when the folder has one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from seemore.config import VisionConfig
from seemore.errors import UserError
from seemore.models.vit import ViT
from seemore.pretrained.decoder import read_hf_config, required
from seemore.pretrained.weights import Weights

TOWERS = {"siglip_vision_model": "siglip", "siglip": "siglip",
          "clip_vision_model": "clip", "clip": "clip"}
ACTIVATIONS = {"gelu_pytorch_tanh": "gelu", "gelu": "gelu_exact", "quick_gelu": "quick_gelu"}
# what each family's processor normalises with, when the folder has no preprocessor_config
PIXELS = {"siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
          "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))}
# where the tower's tensors start in a standalone tower, a whole CLIP/SigLIP and a VLM
PREFIXES = ("", "vision_model.", "model.vision_model.", "vision_tower.vision_model.")


def vision_config(hf: dict, where: str | Path, folder: Path) -> tuple[VisionConfig, str]:
    """Our VisionConfig for a tower's config.json, and the family ("siglip" or "clip")."""
    kind = hf.get("model_type")
    if kind not in TOWERS:
        raise UserError(f"{where}: model_type {kind!r} is not a vision tower seemore reads "
                        f"({', '.join(TOWERS)})")
    family = TOWERS[kind]
    if kind in ("siglip", "clip"):
        hf = hf.get("vision_config") or {}

    def need(key: str):
        return required(hf, key, f"{where} (vision config)")

    act = hf.get("hidden_act", "gelu_pytorch_tanh" if family == "siglip" else "quick_gelu")
    if act not in ACTIVATIONS:
        raise UserError(f"{where}: hidden_act {act!r} is not supported "
                        f"({', '.join(ACTIVATIONS)})")
    if hf.get("num_channels", 3) != 3:
        raise UserError(f"{where}: num_channels {hf['num_channels']}; seemore reads RGB")
    mean, std = PIXELS[family]
    processor = folder / "preprocessor_config.json"
    if processor.is_file():
        try:
            settings = json.loads(processor.read_text())
            mean, std = tuple(settings["image_mean"]), tuple(settings["image_std"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise UserError(f"{processor}: unreadable image_mean/image_std ({e})") from None
    clip = family == "clip"
    config = VisionConfig(
        image_size=need("image_size"), patch_size=need("patch_size"), dim=need("hidden_size"),
        n_layers=need("num_hidden_layers"), n_heads=need("num_attention_heads"),
        mlp=ACTIVATIONS[act], hidden_dim=need("intermediate_size"), norm="layernorm",
        norm_eps=hf.get("layer_norm_eps", 1e-5 if clip else 1e-6), patch_bias=not clip,
        class_token=clip, pre_norm=clip, final_norm=not clip, image_mean=mean, image_std=std)
    return config, family


def _hf_names(config: VisionConfig, prefix: str) -> dict[str, list[str]]:
    """Our parameter name -> the Hugging Face tensors it is made of."""
    e, layers = f"{prefix}embeddings.", f"{prefix}encoder.layers."
    names = {"patch_embed.weight": [e + "patch_embedding.weight"],
             "pos_embed": [e + "position_embedding.weight"]}
    if config.patch_bias:
        names["patch_embed.bias"] = [e + "patch_embedding.bias"]
    if config.class_token:
        names["cls_token"] = [e + "class_embedding"]
    norms = {"pre_norm": "pre_layrnorm"} if config.pre_norm else {}
    if config.final_norm:
        norms["norm"] = "post_layernorm"
    for ours, theirs in norms.items():
        for kind in ("weight", "bias"):
            names[f"{ours}.{kind}"] = [f"{prefix}{theirs}.{kind}"]
    for i in range(config.n_layers):
        ours, theirs = f"blocks.{i}.", f"{layers}{i}."
        for kind in ("weight", "bias"):
            names[ours + f"norm1.{kind}"] = [theirs + f"layer_norm1.{kind}"]
            names[ours + f"norm2.{kind}"] = [theirs + f"layer_norm2.{kind}"]
            names[ours + f"attn.qkv.{kind}"] = [theirs + f"self_attn.{x}_proj.{kind}"
                                                for x in "qkv"]
            names[ours + f"attn.proj.{kind}"] = [theirs + f"self_attn.out_proj.{kind}"]
            names[ours + f"mlp.fc.{kind}"] = [theirs + f"mlp.fc1.{kind}"]
            names[ours + f"mlp.proj.{kind}"] = [theirs + f"mlp.fc2.{kind}"]
    return names


def load_vision(folder: str | Path, dtype: torch.dtype | None = None) -> ViT:
    """The vision tower of a Hugging Face SigLIP or CLIP folder as a ViT, its weights in
    dtype (default: as stored), on the CPU, about one copy of them in memory. It takes
    images with pixels in [0, 1] and normalises them itself, as every seemore ViT does."""
    folder = Path(folder)
    config, _ = vision_config(read_hf_config(folder), folder / "config.json", folder)
    weights = Weights(folder)
    prefix = next((p for p in PREFIXES if p + "embeddings.patch_embedding.weight" in weights),
                  None)
    if prefix is None:
        raise UserError(f"{folder}: the weights have no embeddings.patch_embedding.weight "
                        f"(under any of the prefixes {', '.join(repr(p) for p in PREFIXES)})")
    with torch.device("meta"):
        vit = ViT(config)
    weights.load_into(vit, _hf_names(config, prefix), dtype)
    # the pixel statistics are derived from the config, not stored
    vit.pixel_mean = torch.tensor(config.image_mean).view(1, 3, 1, 1)
    vit.pixel_std = torch.tensor(config.image_std).view(1, 3, 1, 1)
    return vit
