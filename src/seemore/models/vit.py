"""Vision Transformer image encoder: patch embedding (or a convolutional stem), an optional
class token, position embedding and pre-norm blocks. Returns every token's feature, the
class token first when there is one. The options that CLIP's and SigLIP's towers need
(no class token, no patch bias, a norm before the blocks, none after) are config keys."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from seemore.config import MoEConfig, VisionConfig
from seemore.layers.block import Block, init_weights
from seemore.layers.conv_stem import ConvStem
from seemore.layers.norm import make_norm


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """(grid * grid, dim) row-major: a quarter of the channels are sines of the column at
    geometric frequencies, a quarter their cosines, and the other half the same of the row."""
    quarter = dim // 4
    frequencies = 1.0 / 10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    parts = []
    for coordinate in (cols.flatten(), rows.flatten()):
        angles = coordinate[:, None].double() * frequencies  # (grid*grid, quarter)
        parts += [angles.sin(), angles.cos()]
    table = torch.cat(parts, dim=1).float()  # (grid*grid, 4 * quarter)
    return F.pad(table, (0, dim - table.shape[1]))


class ViT(nn.Module):
    def __init__(self, config: VisionConfig, moe: MoEConfig | None = None):
        super().__init__()
        self.config = c = config
        if c.stem == "conv":
            self.patch_embed = ConvStem(c.patch_size, c.dim)
        else:
            self.patch_embed = nn.Conv2d(3, c.dim, kernel_size=c.patch_size, stride=c.patch_size,
                                         bias=c.patch_bias)
        self.n_prefix = int(c.class_token)  # tokens before the patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim)) if c.class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.n_prefix + c.grid_size**2, c.dim))
        self.pre_norm = make_norm(c.norm, c.dim, c.norm_eps) if c.pre_norm else None
        self.blocks = nn.ModuleList(
            Block(c.dim, c.n_heads, c.n_heads, c.hidden, c.norm, causal=False,
                  qk_norm=c.qk_norm, moe=moe if experts else None, mlp=c.mlp,
                  norm_eps=c.norm_eps)
            for experts in (moe or MoEConfig()).layers("vision", c.n_layers)
        )
        self.norm = make_norm(c.norm, c.dim, c.norm_eps) if c.final_norm else nn.Identity()
        init_weights(self, c.n_layers)
        with torch.no_grad():
            # a learned position embedding that starts as a 2-D sine-cosine table (as MAE's
            # fixed one): every patch knows its row and column from the first step. From
            # random std-0.02 values, a tenth of the patches' scale, the VLM took most of its
            # training to tell where an object is (README, "How the model learned to see").
            self.pos_embed[0, self.n_prefix:] = sincos_2d(c.grid_size, c.dim)
        if c.stem == "conv":
            self.patch_embed.reset_parameters()  # fan-in scaled, not the blocks' std 0.02
        self.register_buffer("pixel_mean", torch.tensor(c.image_mean).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(c.image_std).view(1, 3, 1, 1),
                             persistent=False)

    def position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """The learned position embedding, bicubically resized when the patch grid differs
        from the one it was trained at (a different image size)."""
        g = self.config.grid_size
        if (grid_h, grid_w) == (g, g):
            return self.pos_embed
        prefix, patch_pos = self.pos_embed[:, :self.n_prefix], self.pos_embed[:, self.n_prefix:]
        patch_pos = patch_pos.reshape(1, g, g, -1).permute(0, 3, 1, 2)  # (1, D, g, g)
        patch_pos = F.interpolate(patch_pos, size=(grid_h, grid_w), mode="bicubic",
                                  align_corners=False)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
        return torch.cat([prefix, patch_pos], dim=1)

    def patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """The patch embedding: (B, 3, H, W) -> (B, N, dim) and the grid's rows and columns.
        The patchify convolution's numbers, computed as one matmul over the flattened
        p x p patches (im2col by a reshape): on a CPU its forward and backward take about
        0.6 of the convolution's time (README, "Where the time goes"). Pixels past the last
        whole patch are dropped, as the convolution drops them."""
        p = self.config.patch_size
        B, C, H, W = x.shape
        grid_h, grid_w = H // p, W // p
        x = x[:, :, :grid_h * p, :grid_w * p].reshape(B, C, grid_h, p, grid_w, p)
        x = x.permute(0, 2, 4, 1, 3, 5).reshape(B, grid_h * grid_w, C * p * p)
        weight = self.patch_embed.weight.flatten(1)  # (dim, C * p * p), (c, row, col) order
        return F.linear(x, weight, self.patch_embed.bias), grid_h, grid_w

    def forward(self, images: torch.Tensor, cls_only: bool = False) -> torch.Tensor:
        """images (B, 3, H, W) with pixels in [0, 1] -> features (B, n_prefix + N, dim), the
        class token first when there is one; or only the class token's (B, 1, dim) when
        cls_only, which lets the last block skip the MLP and output projection of every
        patch (a quarter of a 3-block ViT)."""
        x = (images - self.pixel_mean) / self.pixel_std
        if self.config.stem == "conv":
            x = self.patch_embed(x)  # (B, D, H/p, W/p)
            grid_h, grid_w = x.shape[2:]
            x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        else:
            x, grid_h, grid_w = self.patchify(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+N, D)
        x = x + self.position_embedding(grid_h, grid_w)
        if self.pre_norm is not None:
            x = self.pre_norm(x)
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            x = block(x, n_queries=1 if cls_only and last else None)
        return self.norm(x)
