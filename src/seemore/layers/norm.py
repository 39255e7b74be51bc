"""LayerNorm or RMSNorm (PyTorch's own), chosen by name in the config."""

import torch.nn as nn


def make_norm(kind: str, dim: int) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(dim)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=1e-6)
    raise ValueError(f"unknown norm {kind!r}")
