"""The feed-forward network of a transformer block: GPT-2's (one hidden layer, GELU) or
Llama's SwiGLU (a SiLU-gated hidden layer), chosen by name in the config."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, out_dim: int | None = None, bias: bool = True):
        super().__init__()
        self.fc = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.GELU(approximate="tanh")
        self.proj = nn.Linear(hidden, out_dim or dim, bias=bias)  # residual projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))


class SwiGLU(nn.Module):
    """silu(x W_gate) * (x W_up), then W_down (Shazeer 2020; Llama). The gate and up
    projections are one matrix, [gate; up], so the hidden layer is one matmul."""

    def __init__(self, dim: int, hidden: int, bias: bool = False):
        super().__init__()
        self.fc = nn.Linear(dim, 2 * hidden, bias=bias)
        self.proj = nn.Linear(hidden, dim, bias=bias)  # residual projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.fc(x).chunk(2, dim=-1)
        return self.proj(F.silu(gate) * up)


def make_mlp(kind: str, dim: int, hidden: int, bias: bool) -> nn.Module:
    if kind == "gelu":
        return MLP(dim, hidden, bias=bias)
    if kind == "swiglu":
        return SwiGLU(dim, hidden, bias=bias)
    raise ValueError(f"unknown MLP {kind!r}")
