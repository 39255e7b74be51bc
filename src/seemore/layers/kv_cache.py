"""A preallocated key/value cache for one attention layer (the gpt-fast pattern)."""

import torch
import torch.nn as nn


class KVCache(nn.Module):
    """Keys and values for up to max_len positions, written in place.

    Prefill writes the whole prompt at once, each decode step writes one position; attention
    then reads positions [0, end). Rows of a batch share the write position: prompts of
    different lengths are left-padded and the pads are masked out.
    """

    def __init__(self, batch: int, n_kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        super().__init__()
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device),
                             persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device),
                             persistent=False)

    def update(self, start: int | torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, n_kv_heads, T, hd) at [start, start+T). An int start (prefill)
        returns the keys and values up to start+T; a tensor start (a decode step, see
        generation.py) returns the first length slots (default: all), whose unwritten
        ones the caller masks, so that the steps have a few shapes whatever start is."""
        if isinstance(start, torch.Tensor):
            self.k.index_copy_(2, start, k)
            self.v.index_copy_(2, start, v)
            return self.k[:, :, :length], self.v[:, :, :length]
        end = start + k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]
