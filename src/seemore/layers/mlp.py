"""The feed-forward network of a transformer block: one hidden layer with a GELU (GPT-2's
and SigLIP's tanh approximation, the exact one, or CLIP's "quick" sigmoid one) or Llama's
SwiGLU (a SiLU-gated hidden layer), chosen by name in the config."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"gelu": lambda: nn.GELU(approximate="tanh"), "gelu_exact": nn.GELU,
               "quick_gelu": QuickGELU}


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, out_dim: int | None = None, bias: bool = True,
                 act: str = "gelu"):
        super().__init__()
        self.fc = nn.Linear(dim, hidden, bias=bias)
        self.act = ACTIVATIONS[act]()
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
    """kind: "swiglu", or the activation of a plain MLP (ACTIVATIONS)."""
    if kind == "swiglu":
        return SwiGLU(dim, hidden, bias=bias)
    if kind in ACTIVATIONS:
        return MLP(dim, hidden, bias=bias, act=kind)
    raise ValueError(f"unknown MLP {kind!r}")
