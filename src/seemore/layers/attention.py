"""Multi-head self-attention on F.scaled_dot_product_attention, shared by every model.

Fused qkv projection, optional grouped-query attention (fewer key/value heads), optional
QK-norm, optional rotary embeddings and an optional KV cache. Scores are scaled by
1/sqrt(head_dim), the width of one head (the original seemore scaled by the model width).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from seemore.layers.kv_cache import KVCache
from seemore.layers.rope import apply_rope


class Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, causal: bool,
                 qk_norm: bool = False, qkv_bias: bool = True, proj_bias: bool = True):
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = dim // n_heads
        self.causal = causal
        # rows: the query heads, then the key heads, then the value heads
        self.qkv = nn.Linear(dim, (n_heads + 2 * n_kv_heads) * self.head_dim, bias=qkv_bias)
        # QK-norm (as in OLMo 2 and Gemma 3): RMS-normalise every query and key head, with a
        # learned gain per head and channel (kept flat: a vector gets no weight decay and no
        # std-0.02 init). Attention logits then no longer start near zero with the small
        # initial weights, so learning which token to look at starts sooner.
        self.qk_gain = (nn.Parameter(torch.ones((n_heads + n_kv_heads) * self.head_dim))
                        if qk_norm else None)
        self.proj = nn.Linear(n_heads * self.head_dim, dim, bias=proj_bias)  # residual
        self.cache: KVCache | None = None

    def project(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, nh, T, hd), keys and values (B, nkv, T, hd) of x (B, T, dim), with
        QK-norm and RoPE applied."""
        B, T, _ = x.shape
        nh, nkv = self.n_heads, self.n_kv_heads
        qkv = self.qkv(x).view(B, T, nh + 2 * nkv, self.head_dim).transpose(1, 2)
        # (B, nh + 2 nkv, T, hd): query heads, then key heads, then value heads
        qk, v = qkv[:, : nh + nkv], qkv[:, nh + nkv:]
        if self.qk_gain is not None:
            gain = self.qk_gain.view(nh + nkv, 1, self.head_dim).to(qk.dtype)
            qk = F.rms_norm(qk, (self.head_dim,)) * gain
        if rope is not None:
            qk = apply_rope(qk, *rope)  # queries and keys in one pass: fewer kernels per step
        return qk[:, :nh], qk[:, nh:], v

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                mask: torch.Tensor | None = None, start: int | torch.Tensor = 0,
                n_queries: int | None = None) -> torch.Tensor:
        """x: (B, T, dim). mask: boolean (B, 1, T, S), True where a query may attend; None
        means full attention, or causal attention for a causal layer. start: where x begins
        in the KV cache, when one is attached (see KVCache.update). n_queries: return only
        the first n positions' outputs (all positions still serve as keys and values)."""
        B, T, _ = x.shape
        q, k, v = self.project(x, rope)  # (B, nh, T, hd), (B, nkv, T, hd), (B, nkv, T, hd)
        if self.cache is not None:
            k, v = self.cache.update(start, k, v)  # (B, nkv, start+T, hd)
        if n_queries is not None:
            q, T = q[:, :, :n_queries], n_queries  # (B, nh, n_queries, hd)
        # a single new query may see every cached key, so it needs no causal mask
        if T == 1 and B > 1 and q.device.type == "cpu" and q.dtype != torch.float32:
            y = self.single_query(q, k, v, mask)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=self.causal and mask is None and T > 1,
                enable_gqa=self.n_kv_heads != self.n_heads,
            )  # (B, nh, T, hd)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, nh * hd)
        return self.proj(y)

    def single_query(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     mask: torch.Tensor | None) -> torch.Tensor:
        """Attention of one query per head (a batched decode step) as two matmuls, the
        softmax in fp32. On CPU in bf16, scaled_dot_product_attention is several times
        slower for this shape once the batch grows (batch 16, 128-256 keys: 400-900 us
        against 140-200; a third of a SmolLM2-135M decode step), while at batch 1 and in
        fp32 it is the faster, so only that case comes here. q (B, nh, 1, hd), k and v
        (B, nkv, S, hd), mask broadcastable to (B, 1, 1, S) -> (B, nh, 1, hd)."""
        B, nh, _, hd = q.shape
        nkv = k.shape[1]
        q = q.view(B, nkv, nh // nkv, hd) * hd**-0.5  # the query heads sharing a key head
        scores = q @ k.transpose(-1, -2)  # (B, nkv, nh/nkv, S)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return (scores.softmax(-1, dtype=torch.float32).to(v.dtype) @ v).view(B, nh, 1, hd)
