"""Data-parallel training under torchrun: which process this is, and the DDP plumbing.

`torchrun --nproc_per_node=N -m seemore train ...` starts N processes with RANK,
WORLD_SIZE and LOCAL_RANK set; each joins one process group (nccl on CUDA, gloo on the
CPU), trains a replica on its own shard of every batch and averages gradients. Without
torchrun there is one process and none of this applies.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that logs, evaluates and writes files."""
        return self.rank == 0


def join(device_kind: str) -> World:
    """This process's place; starts the process group when torchrun launched several."""
    world = World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                  int(os.environ.get("LOCAL_RANK", 0)))
    if world.size > 1 and not dist.is_initialized():
        if device_kind == "cuda":
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return world


def leave(world: World) -> None:
    """End the process group cleanly. A worker (rank > 0) then exits at once: with gloo on
    a CPU, a rank was seen to abort at interpreter exit ("terminate called without an
    active exception") after all its work was done."""
    if world.size == 1 or not dist.is_initialized():
        return
    dist.barrier()
    dist.destroy_process_group()
    if not world.main:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


class LossOf(nn.Module):
    """A model's training loss as a module's forward, which DistributedDataParallel needs
    to see (it prepares the gradient averaging in forward)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch) -> torch.Tensor:
        return self.model.loss(batch)
