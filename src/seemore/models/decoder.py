"""Decoder-only language model: token embedding, RoPE, causal pre-norm blocks, LM head."""

import torch
import torch.nn as nn

from seemore.config import DecoderConfig, MoEConfig
from seemore.layers.block import Block, init_weights
from seemore.layers.kv_cache import KVCache
from seemore.layers.norm import make_norm
from seemore.layers.rope import RotaryEmbedding


class Decoder(nn.Module):
    def __init__(self, config: DecoderConfig, moe: MoEConfig | None = None):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.dim)
        self.rope = RotaryEmbedding(c.dim // c.n_heads, c.max_seq_len, c.rope_base)
        self.blocks = nn.ModuleList(
            Block(c.dim, c.n_heads, c.kv_heads, c.hidden, c.norm, causal=True,
                  qk_norm=c.qk_norm, moe=moe if experts else None, mlp=c.mlp, bias=c.bias,
                  norm_eps=c.norm_eps)
            for experts in (moe or MoEConfig()).layers("decoder", c.n_layers)
        )
        self.norm = make_norm(c.norm, c.dim, c.norm_eps)
        self.lm_head = nn.Linear(c.dim, c.vocab_size, bias=False)
        init_weights(self, c.n_layers)
        if c.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def forward(self, x: torch.Tensor, positions: torch.Tensor,
                mask: torch.Tensor | None = None, start: int | torch.Tensor = 0,
                last: bool | torch.Tensor = False) -> torch.Tensor:
        """x: input embeddings (B, T, D); positions: (B, T) RoPE positions; mask: boolean
        or additive (B, 1, T, S) (see Attention.forward), or None for plain causal
        attention; start: cache write position (see KVCache.update). Returns logits (B, T,
        vocab), or with last only the last position's (B, 1, vocab): all a prompt's prefill
        needs, and with a large vocabulary the head over every prompt position is a large
        share of it. last may also be a (B,) tensor: each row's own last position
        (right-padded prompts)."""
        rope = self.rope(positions)
        for block in self.blocks:
            x = block(x, rope, mask, start)
        if isinstance(last, torch.Tensor):
            x = x[torch.arange(x.shape[0], device=x.device), last][:, None]
        elif last:
            x = x[:, -1:]
        return self.lm_head(self.norm(x))

    def setup_cache(self, batch: int, max_len: int, dtype: torch.dtype) -> None:
        c, device = self.config, self.embed.weight.device
        for block in self.blocks:
            block.attn.cache = KVCache(batch, c.kv_heads, max_len, c.dim // c.n_heads, dtype,
                                       device)

    def clear_cache(self) -> None:
        for block in self.blocks:
            block.attn.cache = None
