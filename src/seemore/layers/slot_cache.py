"""A key/value cache of fixed slots, one per sequence being decoded, each at its own length:
what continuous batching needs, where sequences join and leave between decode steps
(serving/engine.py). KVCache (kv_cache.py) serves a batch that starts and ends together."""

import torch

from seemore.layers.kv_cache import KVCache


class SlotCache(KVCache):
    """Keys and values for n_slots sequences (KVCache's batch) of up to max_len positions.
    Before each forward the caller sets rows, the slots of the batch's rows, in order. A
    prefill (int start 0) writes the rows' prompts, right-padded to one length (a row's
    padding is overwritten by its decode steps before any mask lets it be seen) and
    returns them as they are; a decode step (start: each row's
    position, a (B,) tensor) writes one position per row and returns the rows' caches up to
    a length, whose unwritten positions the caller masks."""

    def __init__(self, n_slots: int, n_kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        super().__init__(n_slots, n_kv_heads, max_len, head_dim, dtype, device)
        self.rows = torch.zeros(1, dtype=torch.long, device=device)

    def update(self, start: int | torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v: (B, n_kv_heads, T, hd); T > 1 only for a prefill (int start), whose rows
        start empty. A decode step returns the rows' first length slots (default: all)."""
        if isinstance(start, torch.Tensor):
            self.k[self.rows, :, start] = k[:, :, 0]
            self.v[self.rows, :, start] = v[:, :, 0]
            # index_select copies each row's window whole: 2-3x faster than indexing
            # with the rows tensor for windows up to 128 (README, "Serve and chat")
            return (self.k[:, :, :length].index_select(0, self.rows),
                    self.v[:, :, :length].index_select(0, self.rows))
        end = start + k.shape[2]
        self.k[self.rows, :, start:end] = k
        self.v[self.rows, :, start:end] = v
        return k, v
