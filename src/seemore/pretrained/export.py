"""A seemore decoder written as a Hugging Face folder (config.json and model.safetensors)
that transformers' AutoModelForCausalLM loads with the same logits: model_type "qwen2"
for one with biases on q, k and v only, "llama" otherwise. The decoder must have the Llama
family's shape: a SwiGLU MLP, RMSNorm, no QK-norm and no experts (an imported decoder has
it; so does one trained with decoder.mlp=swiglu)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from seemore.errors import UserError
from seemore.layers.moe import MoE
from seemore.models.decoder import Decoder
from seemore.pretrained.decoder import hf_names


def hf_config(decoder: Decoder) -> dict:
    """The config.json of decoder as a Hugging Face model."""
    c = decoder.config
    problems = [what for what, bad in (
        ("decoder.mlp=swiglu", c.mlp != "swiglu"), ("decoder.norm=rmsnorm", c.norm != "rmsnorm"),
        ("decoder.qk_norm=false", c.qk_norm),
        ("no mixture of experts", any(isinstance(b.mlp, MoE) for b in decoder.blocks)))
        if bad]
    if problems:
        raise UserError(f"this decoder is not of the Llama family's shape; exporting it needs "
                        f"{', '.join(problems)}")
    kind = "qwen2" if c.bias == "qkv" else "llama"
    dtype = str(decoder.embed.weight.dtype).removeprefix("torch.")
    config = {
        "architectures": ["Qwen2ForCausalLM" if kind == "qwen2" else "LlamaForCausalLM"],
        "model_type": kind, "vocab_size": c.vocab_size, "hidden_size": c.dim,
        "intermediate_size": c.hidden, "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads, "num_key_value_heads": c.kv_heads,
        "head_dim": c.dim // c.n_heads, "hidden_act": "silu",
        "max_position_embeddings": c.max_seq_len, "rms_norm_eps": c.norm_eps or 1e-6,
        "rope_theta": c.rope_base,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_base},
        "tie_word_embeddings": c.tie_embeddings, "torch_dtype": dtype, "dtype": dtype}
    if kind == "llama":
        config["attention_bias"] = config["mlp_bias"] = c.bias == "all"
    return config


def export_decoder(decoder: Decoder, folder: str | Path) -> Path:
    """Write decoder into folder (created) as a Hugging Face model; returns the folder."""
    config = hf_config(decoder)
    c = decoder.config
    head = c.dim // c.n_heads
    # our fused matrices split back into theirs: q, k and v (of grouped-query widths), or
    # gate and up (equal halves)
    qkv = [c.n_heads * head, c.kv_heads * head, c.kv_heads * head]
    ours = decoder.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for name, theirs in hf_names(c).items():
        if name == "lm_head.weight" and c.tie_embeddings:
            continue  # the embedding, which transformers ties back
        sizes = qkv if ".attn.qkv." in name else ours[name].shape[0] // len(theirs)
        for part, tensor in zip(theirs, ours[name].split(sizes), strict=True):
            tensors[part] = tensor.contiguous()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder
