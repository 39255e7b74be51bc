"""The feed-forward network of a transformer block."""

import torch
import torch.nn as nn


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, out_dim: int | None = None):
        super().__init__()
        self.fc = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.proj = nn.Linear(hidden, out_dim or dim)  # residual projection: scaled at init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))
