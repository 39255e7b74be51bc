"""LayerNorm or RMSNorm (PyTorch's own), chosen by name in the config."""

import torch.nn as nn


def make_norm(kind: str, dim: int, eps: float = 0.0) -> nn.Module:
    """eps 0: the usual epsilon, 1e-5 for LayerNorm and 1e-6 for RMSNorm."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps or 1e-5)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps or 1e-6)
    raise ValueError(f"unknown norm {kind!r}")
