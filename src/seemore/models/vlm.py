"""The vision-language model: ViT -> projector -> visual tokens spliced into the decoder's
input at the <image> placeholder. Also the prompt format, and saving/loading a model folder."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from seemore.config import Config
from seemore.data.collate import CAPTION_PROMPT, IGNORE_INDEX, prompt_ids
from seemore.data.images import load_image_tensor
from seemore.errors import UserError
from seemore.generation import generate_text
from seemore.layers.moe import router_loss
from seemore.models.decoder import Decoder
from seemore.models.folder import save_folder
from seemore.models.projector import Projector
from seemore.models.vit import ViT
from seemore.tokenizer import CharTokenizer


class VLM(nn.Module):
    def __init__(self, config: Config, tokenizer: CharTokenizer):
        super().__init__()
        if config.model.decoder.vocab_size != len(tokenizer):
            raise UserError(f"model.decoder.vocab_size ({config.model.decoder.vocab_size}) "
                            f"does not match the tokenizer ({len(tokenizer)} tokens)")
        self.config = config
        self.tokenizer = tokenizer
        self.vision = ViT(config.model.vision, config.model.moe)
        self.projector = Projector(config.model)
        self.decoder = Decoder(config.model.decoder, config.model.moe)

    @property
    def device(self) -> torch.device:
        return self.decoder.embed.weight.device

    # --- prompts --------------------------------------------------------------------------

    def prompt_ids(self, question: str) -> list[int]:
        return prompt_ids(self.tokenizer, self.config.model.n_visual_tokens, question)

    # --- forward --------------------------------------------------------------------------

    def embed(self, ids: torch.Tensor, images: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings (B, T, D) with visual tokens written over the <image> slots: the
        k-th slot of a row gets visual token k mod M of the row's image, so a packed row
        with several tasks repeats its image in each."""
        x = self.decoder.embed(ids)  # (B, T, D)
        if images is None:
            return x
        cls_only = self.config.model.projector.tokens == "cls"
        visual = self.projector(self.vision(images, cls_only))  # (B, M, D)
        slots = ids == self.tokenizer.image_id  # (B, T)
        M = visual.shape[1]
        if bool((slots.sum(-1) % M).any()):
            raise ValueError(f"every row needs a multiple of {M} <image> slots, got "
                             f"{slots.sum(-1).tolist()}")
        which = (slots.cumsum(-1) - 1).clamp(min=0) % M  # (B, T): visual token per slot
        picked = visual.gather(1, which.unsqueeze(-1).expand(-1, -1, visual.shape[-1]))
        return torch.where(slots.unsqueeze(-1), picked.to(x.dtype), x)

    def forward(self, ids: torch.Tensor, images: torch.Tensor | None,
                labels: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training forward on right-padded ids (B, T). labels (B, T) hold the target of each
        position's next-token prediction, already shifted, IGNORE_INDEX where no loss is
        taken. positions (B, T) and a boolean mask (B, 1, T, T) describe packed sequences
        (see data/collate.py); by default positions count from 0 and attention is causal.
        Returns (logits, mean loss over target tokens or None)."""
        if positions is None:
            positions = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        context = self.config.model.decoder.max_seq_len
        if int(positions.max()) >= context:
            raise UserError(f"a training sequence reaches position {int(positions.max())} but "
                            f"the model's context (model.decoder.max_seq_len) is {context}")
        x = self.embed(ids, images)
        logits = self.decoder(x, positions, mask)
        if labels is None:
            return logits, None
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                               ignore_index=IGNORE_INDEX)
        return logits, loss

    def loss(self, batch) -> torch.Tensor:
        """The training loss of a data.collate.Batch: cross-entropy, plus the routers'
        auxiliary losses when there are mixture-of-experts layers."""
        loss = self(batch.ids, batch.images, batch.labels, batch.positions, batch.mask)[1]
        return loss + router_loss(self, self.config.model.moe)

    # --- the friendly API -----------------------------------------------------------------

    def ask(self, image, question: str, max_new_tokens: int = 64, **sampling) -> str:
        """Answer a question about one image (a path, a PIL image or an array)."""
        return self.ask_batch([image], [question], max_new_tokens, **sampling)[0]

    def caption(self, image, max_new_tokens: int | None = None, **sampling) -> str:
        """Describe one image (a path, a PIL image or an array). By default the caption may
        run to the end of the context (generation stops there)."""
        max_new_tokens = max_new_tokens or self.config.model.decoder.max_seq_len
        return self.ask(image, CAPTION_PROMPT, max_new_tokens, **sampling)

    def complete(self, prompt: str, max_new_tokens: int = 200, **sampling) -> str:
        """The prompt and its continuation by the decoder alone, without an image (what a
        language-model run, train.objective=lm, learned)."""
        if not prompt:
            raise UserError("the prompt is empty")
        ids = self.tokenizer.encode(prompt, what="prompt")
        return prompt + generate_text(self, [ids], None, max_new_tokens, **sampling)[0]

    def ask_batch(self, images: list, questions: list[str], max_new_tokens: int = 64,
                  **sampling) -> list[str]:
        size = self.config.model.vision.image_size
        policy = self.config.data.resize
        pixels = torch.stack([load_image_tensor(im, size, policy) for im in images])
        pixels = pixels.to(self.device)
        prompts = [self.prompt_ids(q) for q in questions]
        return generate_text(self, prompts, pixels, max_new_tokens, **sampling)

    # --- model folder ---------------------------------------------------------------------

    def save_pretrained(self, folder: str | Path) -> None:
        """Write config.json, model.safetensors and tokenizer.json (models/folder.py)."""
        save_folder(self, folder)
