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
        """x: (B, T, dim). mask: (B, 1, T, S), boolean (True where a query may attend) or
        additive (0 there, -inf elsewhere, in x's dtype: what a decode step passes, see
        generation.py); None means full attention, or causal attention for a causal layer.
        start: where x begins in the KV cache, when one is attached (see KVCache.update).
        n_queries: return only the first n positions' outputs (all positions still serve as
        keys and values)."""
        B, T, _ = x.shape
        q, k, v = self.project(x, rope)  # (B, nh, T, hd), (B, nkv, T, hd), (B, nkv, T, hd)
        if self.cache is not None:
            # (B, nkv, S, hd): a decode step reads the S slots its mask covers
            k, v = self.cache.update(start, k, v, None if mask is None else mask.shape[-1])
        if n_queries is not None:
            q, T = q[:, :, :n_queries], n_queries  # (B, nh, n_queries, hd)
        causal = self.causal and mask is None and T > 1
        if T == 1 and torch.compiler.is_compiling():
            y = single_query_attention(q, k, v, mask)
        elif uses_matmuls(q, k):
            y = matmul_attention(q, k, v, mask, causal)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=causal,
                enable_gqa=self.n_kv_heads != self.n_heads,
            )  # (B, nh, T, hd)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, nh * hd)
        return self.proj(y)


MATMUL_KEYS = 176  # the longest key sequence for which the matmul path is the faster


def uses_matmuls(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether attention of q (B, nh, T, hd) over k (B, nkv, S, hd) takes the matmul path:
    on CPU in half precision, up to MATMUL_KEYS keys, and for a single query per row at
    batch > 1 (a batched decode step) at any length. There scaled_dot_product_attention is
    the slower: its math path also guards every row against being fully masked, its flash
    kernel is built for long sequences and blocks of queries (measured on 2 cores, bf16:
    README, "Where the time goes"). Elsewhere (fp32, GPUs, one query at batch 1, long
    sequences) it is the faster or the same."""
    B, _, T, _ = q.shape
    if q.device.type != "cpu" or q.dtype == torch.float32:
        return False
    return B > 1 if T == 1 else k.shape[2] <= MATMUL_KEYS


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
    """Attention as two matmuls around a softmax (see uses_matmuls for when). q (B, nh,
    T, hd), k and v (B, nkv, S, hd), mask broadcastable to (B, nh, T, S), boolean (True
    where a query may look) or additive; causal: query i sees keys 0..i, as
    scaled_dot_product_attention's is_causal -> (B, nh, T, hd) in q's dtype.

    While training (gradients flowing) it computes in fp32, as PyTorch's math path does:
    with the matmuls and the softmax in bf16 the default preset trained 40% faster but
    learned where objects are worse (README, "Where the time goes": in bf16 the gradient
    of the scores is a small difference of rounded numbers). Decoding keeps the matmuls
    in q's dtype, the softmax in fp32."""
    dtype = q.dtype
    training = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
    with torch.autocast(q.device.type, enabled=False):
        if training:
            q, k, v = q.float(), k.float(), v.float()
        B, nh, T, hd = q.shape
        nkv, S = k.shape[1], k.shape[2]
        # the query heads that share a key head, stacked: one matmul per key head
        q = q.reshape(B, nkv, nh // nkv * T, hd) * hd**-0.5
        scores = (q @ k.transpose(-1, -2)).view(B, nh, T, S)
        if causal:
            future = torch.ones(T, S, dtype=torch.bool, device=q.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        if mask is not None:
            scores = hide(scores, mask)
        weights = scores.softmax(-1, dtype=torch.float32).to(v.dtype)
        y = weights.view(B, nkv, nh // nkv * T, S) @ v
    return y.view(B, nh, T, hd).to(dtype)


def hide(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scores with -inf where mask hides a key: mask boolean (False hides) or additive."""
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, float("-inf"))
    return scores + mask


def single_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           mask: torch.Tensor | None) -> torch.Tensor:
    """Attention of one query per row, q (B, nh, 1, hd), over k and v (B, nkv, S, hd), mask
    (boolean or additive) broadcastable to (B, 1, 1, S) -> (B, nh, 1, hd), written as
    products and sums rather than matmuls: for a compiled decode step, where inductor fuses
    it into one pass over the cache's keys and one over its values (at batch 16 the step
    ran 1.25x faster than with scaled_dot_product_attention's kernel; README,
    "Where the time goes"). Eager, the products would be materialised, so there the other
    paths serve. An additive mask is the faster there: a boolean one is converted in every
    layer's kernel (1.4x the attention's time at 240 keys)."""
    B, nh, _, hd = q.shape
    nkv = k.shape[1]
    q = q.reshape(B, nkv, nh // nkv, 1, hd).float()  # the query heads sharing a key head
    scores = (q * k[:, :, None].float()).sum(-1) * hd**-0.5  # (B, nkv, nh // nkv, S)
    if mask is not None:
        scores = hide(scores, mask)
    weights = scores.softmax(-1)
    y = (weights[..., None] * v[:, :, None].float()).sum(-2)  # (B, nkv, nh // nkv, hd)
    return y.reshape(B, nh, 1, hd).to(v.dtype)
