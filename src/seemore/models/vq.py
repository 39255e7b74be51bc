"""The image tokenizer: a convolutional VQ-VAE (van den Oord et al., 2017) that turns an image
into a grid of discrete codes and back.

    image (3, 64, 64) -> encoder -> (code_dim, 8, 8) -> nearest codebook entry per cell
                      -> codes (64,) -> codebook vectors -> pixel decoder -> image

Each of the encoder's stride-2 convolutions halves the side, so vq.channels = (32, 64, 128)
gives an 8x8 grid for a 64x64 image. The codebook is not trained by gradients: each entry is
an exponential moving average of the encoder outputs assigned to it (the VQ-VAE paper's
appendix, as in Jukebox and VQGAN's EMA variant), which trains more stably than the
codebook loss. The encoder learns through the straight-through estimator (the decoder's
gradient is copied onto the encoder output) and a commitment loss that keeps it close to
its code. The reconstruction loss is pixel MSE plus an edge loss that keeps outlines
sharp. An entry that hardly any output was assigned to recently is "dead": it is moved onto
a random encoder output of the batch, so the whole codebook stays in use. (Under
torchrun, DistributedDataParallel copies the first process's codebook, a buffer, to the
others before each step: the codebook follows that process's share of the batches.)

The decoder-only VLM learns to write these codes after a caption (models/vlm.py), and this
model's pixel decoder turns them into the picture.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from seemore.config import VQConfig
from seemore.models.folder import FolderModel


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def encoder(c: VQConfig) -> nn.Sequential:
    ch = c.channels
    layers: list[nn.Module] = [nn.Conv2d(3, ch[0], 4, stride=2, padding=1)]
    for c_in, c_out in zip(ch, ch[1:], strict=False):
        layers += [ResidualBlock(c_in), nn.ReLU(),
                   nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)]
    layers += [ResidualBlock(ch[-1]), ResidualBlock(ch[-1]), nn.ReLU(),
               nn.Conv2d(ch[-1], c.code_dim, 1)]
    return nn.Sequential(*layers)


def pixel_decoder(c: VQConfig) -> nn.Sequential:
    ch = c.channels
    layers: list[nn.Module] = [nn.Conv2d(c.code_dim, ch[-1], 3, padding=1),
                               ResidualBlock(ch[-1]), ResidualBlock(ch[-1])]
    for c_in, c_out in zip(ch[::-1], ch[-2::-1], strict=False):
        layers += [nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1),
                   ResidualBlock(c_out)]
    layers += [nn.ReLU(), nn.ConvTranspose2d(ch[0], 3, 4, stride=2, padding=1)]
    return nn.Sequential(*layers)


class Quantizer(nn.Module):
    """Nearest-entry lookup in a codebook updated by exponential moving averages."""

    def __init__(self, c: VQConfig):
        super().__init__()
        self.decay, self.restart_below = c.ema_decay, c.restart_below
        self.register_buffer("codebook", torch.randn(c.codebook_size, c.code_dim))
        self.register_buffer("cluster_size", torch.ones(c.codebook_size))
        self.register_buffer("embed_sum", self.codebook.clone())
        self.counts = torch.zeros(c.codebook_size)  # of the last training batch, for reports

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """The index of the closest entry (N,) for each vector of flat (N, D)."""
        distances = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.T
                     + self.codebook.pow(2).sum(1))
        return distances.argmin(1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (B, D, H, W) -> (quantised z with straight-through gradients, codes (B, H*W),
        commitment loss)."""
        B, D, H, W = z.shape
        flat = z.float().permute(0, 2, 3, 1).reshape(-1, D)
        with torch.autocast(z.device.type, enabled=False):  # bf16 distances pick wrong codes
            codes = self.nearest(flat.detach())
        quantised = self.codebook[codes]
        if self.training:
            self.update(flat.detach(), codes)
        commitment = F.mse_loss(flat, quantised)
        quantised = flat + (quantised - flat).detach()
        quantised = quantised.reshape(B, H, W, D).permute(0, 3, 1, 2)
        return quantised, codes.reshape(B, H * W), commitment

    @torch.no_grad()
    def update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        K, eps = self.codebook.shape[0], 1e-5
        counts = torch.bincount(codes, minlength=K).float()
        sums = torch.zeros_like(self.embed_sum).index_add_(0, codes, flat)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + eps) / (n + K * eps) * n  # Laplace: never divide by 0
        self.codebook.copy_(self.embed_sum / smoothed[:, None])
        dead = self.cluster_size < self.restart_below
        if dead.any():
            picks = flat[torch.randint(len(flat), (int(dead.sum()),), device=flat.device)]
            self.codebook[dead] = picks
            self.embed_sum[dead] = picks
            self.cluster_size[dead] = 1.0
        self.counts = counts


def edge_error(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error of the differences between vertically and horizontally neighbouring
    pixels. Pixel MSE alone is smallest for a blur wherever the codes leave the exact
    outline in doubt, and a small square with blurred corners reads as a circle; this term
    charges for the blur itself, since a soft edge spreads one large step between
    neighbours over several small ones."""
    return sum(F.mse_loss(reconstruction.diff(dim=d), target.diff(dim=d)) for d in (-2, -1))


def usage(counts: torch.Tensor) -> dict:
    """Perplexity (the effective number of entries in use) and the fraction of entries used,
    from how often each entry was picked."""
    p = counts / counts.sum().clamp(min=1)
    perplexity = torch.exp(-(p * p.clamp(min=1e-12).log()).sum())
    return {"perplexity": perplexity.item(), "codes_used": (counts > 0).float().mean().item()}


class VQVAE(FolderModel):
    """Images (B, 3, H, W) in [0, 1] <-> codes (B, N), N = (H / 2**len(vq.channels))**2."""

    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = config
        self.encoder = encoder(config)
        self.quantizer = Quantizer(config)
        self.pixel_decoder = pixel_decoder(config)
        self.last: dict = {}

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction in [-1, 1] scale, codes, commitment loss)."""
        quantised, codes, commitment = self.quantizer(self.encoder(images * 2 - 1))
        return self.pixel_decoder(quantised), codes, commitment

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruction and edge errors plus the weighted commitment loss, on a batch of
        images."""
        c = self.config
        reconstruction, _, commitment = self(images)
        reconstruction, target = reconstruction.float(), images * 2 - 1
        error = F.mse_loss(reconstruction, target)
        edges = edge_error(reconstruction, target)
        # kept as tensors: reading them out (a device sync) waits for report()
        self.last = {"reconstruction": error.detach(), "edges": edges.detach(),
                     "commitment": commitment.detach()}
        return error + c.edge_weight * edges + c.commitment * commitment

    def report(self) -> dict:
        """The last training batch's losses and codebook usage, for metrics.jsonl."""
        return {**{k: v.item() for k, v in self.last.items()}, **usage(self.quantizer.counts)}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Codes (B, N) of images (B, 3, H, W) in [0, 1], row-major over the grid."""
        return self.quantizer(self.encoder(images * 2 - 1))[1]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] of codes (B, N)."""
        B, N = codes.shape
        side = int(N**0.5)
        quantised = self.quantizer.codebook[codes].reshape(B, side, side, -1).permute(0, 3, 1, 2)
        return ((self.pixel_decoder(quantised) + 1) / 2).clamp(0, 1)
