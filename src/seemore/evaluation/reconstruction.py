"""How well a VQ-VAE reconstructs held-out images: PSNR, and how much of the codebook the
images use."""

from __future__ import annotations

import math

import torch

from seemore.data.datasets import dataset_of
from seemore.data.images import to_tensor
from seemore.models.vq import usage


@torch.inference_mode()
def evaluate_vq(model, split: str = "test", n: int = 500, batch_size: int = 100,
                data=None) -> dict:
    """PSNR (dB, pixels in 0..255, over all n images' pixels together), and the perplexity
    and fraction of codebook entries in use over n images of a split of data (default: the
    run's dataset; all of it if it holds fewer)."""
    was_training = model.training
    model.eval()
    data = dataset_of(model.run) if data is None else data
    n = min(n, data.size(split) or n)
    K = model.config.codebook_size
    squared_error, pixels, counts = 0.0, 0, torch.zeros(K)
    for start in range(0, n, batch_size):
        images = torch.stack([to_tensor(data.pair(split, i)[0])
                              for i in range(start, min(n, start + batch_size))])
        images = images.to(model.device)
        codes = model.encode(images)
        reconstruction = model.decode(codes)
        squared_error += ((reconstruction - images) * 255).pow(2).sum().item()
        pixels += images.numel()
        counts += torch.bincount(codes.flatten().cpu(), minlength=K).float()
    mse = squared_error / pixels
    model.train(was_training)
    return {split: {"psnr": 10 * math.log10(255**2 / max(mse, 1e-10)), **usage(counts),
                    "n_images": n}}


def format_vq_table(result: dict, split: str = "test") -> str:
    r = result[split]
    return (f"{split}: PSNR {r['psnr']:.2f} dB over {r['n_images']} images; codebook: "
            f"{r['codes_used']:.0%} of entries used, perplexity {r['perplexity']:.0f}")
