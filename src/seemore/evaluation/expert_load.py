"""Where a mixture-of-experts model sends its tokens: the load of every expert of every MoE
layer over held-out examples, and a heat map of it (layer x expert)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from seemore.layers.moe import moe_layers


@torch.no_grad()
def expert_load(model, dataset: Dataset, collate: Callable,
                batch_size: int = 64) -> dict[str, list[float]]:
    """The fraction of each MoE layer's (token, expert) assignments that went to each
    expert, over a dataset of training-format examples (teacher-forced)."""
    was_training = model.training
    model.eval()
    layers = moe_layers(model)
    counts = {name: torch.zeros(layer.num_experts) for name, layer in layers.items()}
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        model.loss(batch.to(model.device))
        for name, layer in layers.items():
            counts[name] += layer.stats.load.cpu() * layer.stats.assignments
    model.train(was_training)
    return {name: (c / c.sum()).tolist() for name, c in counts.items()}


def plot_expert_load(load: dict[str, list[float]], path: str | Path, title: str = "") -> None:
    """A heat map of expert load, one row per layer, written as a PNG."""
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend stays as it is

    grid = np.array(list(load.values()))  # (layers, experts)
    fig = Figure(figsize=(1.0 + 0.6 * grid.shape[1], 1.2 + 0.45 * grid.shape[0]))
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="viridis", vmin=0, aspect="auto")
    for (row, col), value in np.ndenumerate(grid):
        ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                color="white" if value < grid.max() * 0.6 else "black")
    ax.set_xticks(range(grid.shape[1]))
    ax.set_yticks(range(grid.shape[0]), [name.removesuffix(".mlp") for name in load])
    ax.set_xlabel(f"expert (uniform load = {1 / grid.shape[1]:.3f})")
    ax.set_title(title or "fraction of tokens per expert")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
