"""The projector: vision features -> visual tokens in the decoder's embedding space."""

import torch
import torch.nn as nn

from seemore.config import ModelConfig
from seemore.layers.mlp import MLP


class Projector(nn.Module):
    """Selects the class token or the patch tokens, optionally pixel-shuffles s x s patch
    blocks into single wider tokens, then applies a two-layer GELU MLP (LLaVA-1.5)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.tokens = config.projector.tokens
        self.n_prefix = int(config.vision.class_token)  # features before the patches
        self.shuffle = config.projector.pixel_shuffle
        in_dim = config.vision.dim * self.shuffle**2
        # PyTorch's default init (std ~ 1/sqrt(3 fan_in)), as LLaVA: visual tokens start at
        # unit scale. With the decoder's std-0.02 init they came out ~50x smaller than
        # the residual stream and the decoder learned to ignore the image.
        self.mlp = MLP(in_dim, config.decoder.dim, config.decoder.dim)

    def pixel_shuffle(self, x: torch.Tensor) -> torch.Tensor:
        """(B, g*g, D) -> (B, (g/s)^2, s*s*D): each token holds an s x s block of patches."""
        B, N, D = x.shape
        g, s = int(N**0.5), self.shuffle
        x = x.view(B, g // s, s, g // s, s, D)  # (B, gh, s, gw, s, D)
        x = x.permute(0, 1, 3, 2, 4, 5)  # (B, gh, gw, s, s, D)
        return x.reshape(B, (g // s) ** 2, s * s * D)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, n_prefix + N, Dv), the class token first when the ViT has one ->
        visual tokens (B, M, D)."""
        x = features[:, :1] if self.tokens == "cls" else features[:, self.n_prefix:]
        if self.shuffle > 1:
            x = self.pixel_shuffle(x)
        return self.mlp(x)
