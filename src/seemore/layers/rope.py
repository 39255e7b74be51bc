"""Rotary position embeddings (RoPE).

Layout: the "rotate half" convention of GPT-NeoX and Llama in Hugging Face format. The head
dimension is split into two halves (x1, x2); frequency i rotates the pair (x1[i], x2[i]).
Importers of outside weights convert to this layout.
"""

import torch
import torch.nn as nn


class RotaryEmbedding(nn.Module):
    """Holds cos/sin tables for positions 0..max_len-1, computed once."""

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)
        # non-persistent: derived from the config, never saved with the weights
        self.register_buffer("cos", angles.cos().float(), persistent=False)  # (max_len, hd/2)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for integer positions (B, T), shaped (B, 1, T, hd/2) to broadcast."""
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, n_head, T, hd) by the angles in cos/sin (B, 1, T, hd/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
