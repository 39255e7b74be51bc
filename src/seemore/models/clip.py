"""Contrastive image-text pretraining: CLIP (Radford et al., 2021) and SigLIP (Zhai et al.,
2023) on the same ViT the VLM uses, so a pretrained encoder drops into a VLM unchanged.

    image   -> ViT -> class token  -> linear -> unit vector  \
                                                             > cosine similarities x scale -> loss
    caption -> text transformer -> <eos> -> linear -> unit vector /

The text encoder is a stack of the shared Block over character embeddings with RoPE,
causal as in CLIP or bidirectional, read out at the <eos> token that ends every caption.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from seemore.config import ClipConfig, ModelConfig
from seemore.errors import UserError
from seemore.layers.block import Block, init_weights
from seemore.layers.moe import router_loss
from seemore.layers.norm import make_norm
from seemore.layers.rope import RotaryEmbedding
from seemore.models.folder import FolderModel
from seemore.models.vit import ViT
from seemore.prompt import caption_ids
from seemore.tokenizer import Tokenizer

MAX_LOGIT_SCALE = math.log(100)  # CLIP clamps the learned temperature at 1/100


def info_nce_loss(image: torch.Tensor, text: torch.Tensor, log_scale: torch.Tensor,
                  positive: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over the (B, B) similarity matrix of unit vectors:
    image i should pick text i among the batch's texts, and text i image i.

    positive (B, B), boolean: the pairs that match. By default the diagonal; when several
    images share a caption (ten captions for all the digits) each row's target is spread
    evenly over its matches, instead of calling identical captions negatives."""
    logits = image @ text.T * log_scale.exp()
    if positive is None:
        positive = torch.eye(len(image), dtype=torch.bool, device=image.device)
    target = positive.float()
    return (F.cross_entropy(logits, target / target.sum(1, keepdim=True))
            + F.cross_entropy(logits.T, target.T / target.sum(0)[:, None])) / 2


def sigmoid_loss(image: torch.Tensor, text: torch.Tensor, log_scale: torch.Tensor,
                 bias: torch.Tensor, positive: torch.Tensor | None = None) -> torch.Tensor:
    """SigLIP's loss: every (image, text) pair of the batch is an independent binary
    classification, positive where they match (the diagonal by default); summed over texts,
    averaged over images."""
    logits = image @ text.T * log_scale.exp() + bias
    if positive is None:
        positive = torch.eye(len(image), dtype=torch.bool, device=image.device)
    sign = positive.float() * 2 - 1
    return -F.logsigmoid(sign * logits).sum() / len(image)


class TextEncoder(nn.Module):
    def __init__(self, c: ClipConfig, vocab_size: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, c.text_dim)
        self.rope = RotaryEmbedding(c.text_dim // c.text_heads, c.text_max_len)
        self.blocks = nn.ModuleList(
            Block(c.text_dim, c.text_heads, c.text_heads, 4 * c.text_dim, "layernorm",
                  causal=c.text_causal)
            for _ in range(c.text_layers)
        )
        self.norm = make_norm("layernorm", c.text_dim)
        init_weights(self, c.text_layers)

    def forward(self, ids: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
        """ids (B, T), right-padded; eos (B,) the index of each row's <eos>. Returns the
        normalised feature at <eos> (B, text_dim). Padding sits after <eos>, so a causal
        encoder never sees it; a bidirectional one is masked from it."""
        B, T = ids.shape
        positions = torch.arange(T, device=ids.device).expand(B, -1)
        keys = positions <= eos[:, None]  # (B, T): the real tokens
        mask = None if self.blocks[0].attn.causal else keys[:, None, None, :]
        x = self.embed(ids)
        rope = self.rope(positions)
        for block in self.blocks:
            x = block(x, rope, mask)
        return self.norm(x[torch.arange(B, device=ids.device), eos])


class CLIP(FolderModel):
    def __init__(self, config: ModelConfig, tokenizer: Tokenizer):
        super().__init__()
        c = config.clip
        self.config, self.tokenizer = config, tokenizer
        self.vision = ViT(config.vision, config.moe)
        self.text = TextEncoder(c, len(tokenizer))
        self.image_proj = nn.Linear(config.vision.dim, c.embed_dim, bias=False)
        self.text_proj = nn.Linear(c.text_dim, c.embed_dim, bias=False)
        # SigLIP starts at scale 10 and bias -10 (few positives per row); CLIP at 1/0.07
        sigmoid = c.loss == "sigmoid"
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0 if sigmoid else 1 / 0.07)))
        self.bias = nn.Parameter(torch.tensor(-10.0)) if sigmoid else None

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-length image embeddings (B, embed_dim) from pixels in [0, 1]."""
        return F.normalize(self.image_proj(self.vision(images, cls_only=True)[:, 0]), dim=-1)

    def encode_text(self, ids: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
        """Unit-length text embeddings (B, embed_dim) of right-padded caption ids."""
        return F.normalize(self.text_proj(self.text(ids, eos)), dim=-1)

    def text_ids(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids (B, T) of '<bos> caption <eos>' and the index of each <eos>."""
        ids, eos = caption_ids(self.tokenizer, captions)
        self.check_length(ids)
        return ids.to(self.device), eos.to(self.device)

    def check_length(self, ids: torch.Tensor) -> None:
        limit = self.config.clip.text_max_len
        if ids.shape[1] > limit:
            raise UserError(f"a caption is {ids.shape[1]} tokens long (with <bos> and <eos>) "
                            f"but the text encoder reads at most {limit} "
                            "(model.clip.text_max_len)")

    def loss(self, batch) -> torch.Tensor:
        """The training loss of a data.pairs.PairBatch, plus the routers' auxiliary losses
        when the ViT has mixture-of-experts layers."""
        loss = self(batch.images, batch.ids, batch.eos)
        return loss + router_loss(self, self.config.moe)

    def forward(self, images: torch.Tensor, ids: torch.Tensor, eos: torch.Tensor
                ) -> torch.Tensor:
        """The contrastive loss of a batch of matching (image, caption) pairs; pairs whose
        captions are identical count as matches too."""
        self.check_length(ids)
        image, text = self.encode_image(images).float(), self.encode_text(ids, eos).float()
        positive = (ids[:, None, :] == ids[None, :, :]).all(-1)  # (B, B): same caption
        log_scale = self.log_scale.clamp(max=MAX_LOGIT_SCALE)
        if self.bias is None:
            return info_nce_loss(image, text, log_scale, positive)
        return sigmoid_loss(image, text, log_scale, self.bias, positive)
