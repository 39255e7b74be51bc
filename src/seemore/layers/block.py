"""The pre-norm transformer block, written once and used by the ViT and the decoder."""

import torch
import torch.nn as nn

from seemore.config import MoEConfig
from seemore.layers.attention import Attention
from seemore.layers.mlp import make_mlp
from seemore.layers.moe import MoE
from seemore.layers.norm import make_norm


class Block(nn.Module):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, hidden: int, norm: str,
                 causal: bool, qk_norm: bool = False, moe: MoEConfig | None = None,
                 mlp: str = "gelu", bias: str = "all", norm_eps: float = 0.0):
        """hidden: the MLP's hidden width. moe: replace the MLP with a mixture of experts of
        the same MLP shape. bias: which linear layers have biases, "all", "qkv" (the
        attention's query, key and value projections only) or "none"."""
        super().__init__()
        self.norm1 = make_norm(norm, dim, norm_eps)
        self.attn = Attention(dim, n_heads, n_kv_heads, causal, qk_norm,
                              qkv_bias=bias != "none", proj_bias=bias == "all")
        self.norm2 = make_norm(norm, dim, norm_eps)
        if moe is None:
            self.mlp = make_mlp(mlp, dim, hidden, bias=bias == "all")
        else:
            self.mlp = MoE(dim, hidden, moe.num_experts, moe.top_k, moe.noise,
                           moe.capacity_factor, act=mlp)

    def forward(self, x: torch.Tensor, rope=None, mask=None, start: int | torch.Tensor = 0,
                n_queries: int | None = None) -> torch.Tensor:
        """n_queries: compute only the first n positions' outputs (see Attention)."""
        # the residual stream carries the un-normalised x (the original added the normalised
        # value back, which pre-norm must not do)
        x = x[:, :n_queries] + self.attn(self.norm1(x), rope, mask, start, n_queries)
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module, n_layers: int) -> None:
    """normal(0, 0.02) for linear and embedding weights, zero biases; residual output
    projections scaled by 1/sqrt(2 * n_layers) as in GPT-2."""
    for name, p in module.named_parameters():
        if p.dim() >= 2:
            std = 0.02 / (2 * n_layers) ** 0.5 if name.endswith("proj.weight") else 0.02
            nn.init.normal_(p, mean=0.0, std=std)
        elif name.endswith("bias"):
            nn.init.zeros_(p)
