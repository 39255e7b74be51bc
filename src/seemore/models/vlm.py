"""The vision-language model: ViT -> projector -> visual tokens spliced into the decoder's
input at the <image> placeholder. Also the prompt format, and saving/loading a model folder.

A model that draws also holds a frozen VQ-VAE (models/vq.py): the decoder writes an image's
codes after a caption and <boi>, and the VQ-VAE's pixel decoder turns them into pixels."""

from __future__ import annotations

import numbers
from contextlib import nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from seemore.config import DRAW_GUIDANCE, DRAW_TEMPERATURE, ModelConfig
from seemore.data.images import load_image_tensor, to_pil
from seemore.device import autocast_context
from seemore.errors import UserError
from seemore.generation import generate, generate_text
from seemore.layers.moe import router_loss
from seemore.models.decoder import Decoder
from seemore.models.folder import FolderModel
from seemore.models.projector import Projector
from seemore.models.vit import ViT
from seemore.models.vq import VQVAE
from seemore.prompt import CAPTION_PROMPT, IGNORE_INDEX, prompt_ids
from seemore.tokenizer import Tokenizer

CAPTION_TOKENS = 256  # every built-in preset's captions fit, with their context


class VLM(FolderModel):
    """resize is how an image that is not square becomes the ViT's input (data.resize)."""

    def __init__(self, config: ModelConfig, tokenizer: Tokenizer, resize: str = "squash"):
        super().__init__()
        if config.decoder.vocab_size != len(tokenizer):
            raise UserError(f"model.decoder.vocab_size ({config.decoder.vocab_size}) "
                            f"does not match the tokenizer ({len(tokenizer)} tokens)")
        self.config, self.tokenizer, self.resize = config, tokenizer, resize
        self.vision = ViT(config.vision, config.moe)
        self.projector = Projector(config)
        self.decoder = Decoder(config.decoder, config.moe)
        self.vq = None
        if tokenizer.codes:
            if tokenizer.codes != config.vq.codebook_size:
                raise UserError(f"the tokenizer has {tokenizer.codes} image codes but "
                                f"model.vq.codebook_size is {config.vq.codebook_size}")
            self.vq = VQVAE(config.vq).requires_grad_(False)
            # RoPE tells the decoder how far apart two tokens are, not where in the image a
            # code goes: a learned embedding per code slot does (DALL-E gives its image
            # tokens row and column embeddings); README, "Text to image", measures the gain.
            self.code_position = nn.Embedding(config.n_image_codes, config.decoder.dim)
            nn.init.normal_(self.code_position.weight, std=0.02)

    def train(self, mode: bool = True) -> VLM:
        super().train(mode)
        if self.vq is not None:
            self.vq.eval()  # a frozen image tokenizer: its codebook must not move
        return self

    # --- prompts --------------------------------------------------------------------------

    def prompt_ids(self, question: str) -> list[int]:
        return prompt_ids(self.tokenizer, self.config.n_visual_tokens, question)

    # --- forward --------------------------------------------------------------------------

    def embed(self, ids: torch.Tensor, images: torch.Tensor | None,
              sees: bool | None = None) -> torch.Tensor:
        """Token embeddings (B, T, D) with visual tokens written over the <image> slots: the
        k-th slot of a row gets visual token k of the row's image. Image codes (between
        <boi> and <eoi>) get the embedding of their place in the image added. sees: whether
        some row has <image> slots, as a data.collate.Batch knows (its rows have every slot
        by construction); None: read from ids and checked (two host syncs)."""
        x = self.decoder.embed(ids)  # (B, T, D)
        if self.vq is not None:
            codes = self.code_slots(ids)
            which = (codes.cumsum(-1) - 1).clamp(min=0) % self.config.n_image_codes
            x = x + codes.unsqueeze(-1) * self.code_position(which)
        slots = ids == self.tokenizer.image_id  # (B, T)
        M = self.config.n_visual_tokens
        if sees is None:
            sees = bool(slots.any())
            if sees and bool((slots.sum(-1) != M).any()):
                raise ValueError(f"every row needs {M} <image> slots, got "
                                 f"{slots.sum(-1).tolist()}")
        if images is None or not sees:
            return x
        cls_only = self.config.projector.tokens == "cls"
        with self.encoding_precision(images.device):
            visual = self.projector(self.vision(images, cls_only))  # (B, M, D)
        which = (slots.cumsum(-1) - 1).clamp(min=0)  # (B, T): visual token per slot
        picked = visual.gather(1, which.unsqueeze(-1).expand(-1, -1, visual.shape[-1]))
        return torch.where(slots.unsqueeze(-1), picked.to(x.dtype), x)

    def encoding_precision(self, device: torch.device):
        """Where training's autocast is not on (generation, evaluation, serving), the vision
        tower and projector run as they trained: under bf16 autocast when the run trained in
        bf16 (train.precision auto or bf16) and this device runs bf16 fast. A batch of
        images is large matmuls of hundreds of rows, where bf16 pays; the decoder stays in
        fp32, as one new token's small matmuls are faster there (measured in README,
        "Where the time goes")."""
        run = getattr(self, "run", None)
        if (run is None or torch.is_autocast_enabled(device.type)
                or run.train.precision not in ("auto", "bf16")):
            return nullcontext()
        return autocast_context("auto", device)

    def forward(self, ids: torch.Tensor, images: torch.Tensor | None,
                labels: torch.Tensor | None = None, sees: bool | None = None,
                draws: bool | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training forward on right-padded ids (B, T), causal. labels (B, T) hold the target
        of each position's next-token prediction, already shifted, IGNORE_INDEX where no
        loss is taken. sees and draws: whether some row has visual tokens / draws (see
        embed; None: read from ids). Returns (logits, mean loss over target tokens or None)."""
        context = self.config.decoder.max_seq_len
        if ids.shape[1] > context:
            raise UserError(f"a training sequence is {ids.shape[1]} tokens long but the "
                            f"model's context (model.decoder.max_seq_len) is {context}")
        if self.vq is not None and images is not None and draws is not False:
            ids, labels = self.write_codes(ids, labels, images, checked=draws is True)
        x = self.embed(ids, images, sees)
        positions = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        logits = self.decoder(x, positions)
        if labels is None:
            return logits, None
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                               ignore_index=IGNORE_INDEX)
        return logits, loss

    def code_slots(self, ids: torch.Tensor) -> torch.Tensor:
        """Which tokens of ids (B, T) are image codes: those between <boi> and <eoi>."""
        tok = self.tokenizer
        opened, closed = (ids == tok.boi_id).cumsum(-1), (ids == tok.eoi_id).cumsum(-1)
        return (opened > closed) & (ids != tok.boi_id)

    def write_codes(self, ids: torch.Tensor, labels: torch.Tensor | None,
                    images: torch.Tensor, checked: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fill the placeholders between <boi> and <eoi> of each drawing row with the codes
        of the row's image, and make them the targets of the positions before them. The
        k-th slot of a row gets code k; checked: the caller knows that some row draws and
        every drawing row has all its slots (else they are read from ids: host syncs)."""
        tok = self.tokenizer
        slots = self.code_slots(ids)  # (B, T)
        N = self.config.n_image_codes
        if not checked:
            counts = slots.sum(-1)
            if not bool(counts.any()):
                return ids, labels
            if bool(((counts != 0) & (counts != N)).any()):
                raise ValueError(f"every drawing row needs {N} code slots, got "
                                 f"{counts.tolist()}")
        with torch.autocast(ids.device.type, enabled=False):
            codes = self.vq.encode(images.float())  # (B, N)
        which = (slots.cumsum(-1) - 1).clamp(min=0, max=N - 1)  # (B, T): code per slot
        ids = torch.where(slots, codes.gather(1, which) + tok.code_ids[0], ids)
        if labels is not None:
            labels = torch.where(slots.roll(-1, dims=1), ids.roll(-1, dims=1), labels)
        return ids, labels

    def loss(self, batch) -> torch.Tensor:
        """The training loss of a data.collate.Batch: cross-entropy, plus the routers'
        auxiliary losses when there are mixture-of-experts layers."""
        loss = self(batch.ids, batch.images, batch.labels, batch.sees, batch.draws)[1]
        return loss + router_loss(self, self.config.moe)

    # --- the friendly API -----------------------------------------------------------------

    def ask(self, image, question: str, max_new_tokens: int = 64, **sampling) -> str:
        """Answer a question about one image (a path, a PIL image or an array)."""
        return self.ask_batch([image], [question], max_new_tokens, **sampling)[0]

    @property
    def caption_tokens(self) -> int:
        """The most tokens a caption runs to by default: to the end of the context, up to
        CAPTION_TOKENS (an imported decoder's context of thousands would hold a KV cache of
        gigabytes for a batch of captions)."""
        return min(self.config.decoder.max_seq_len, CAPTION_TOKENS)

    def caption(self, image, max_new_tokens: int | None = None, **sampling) -> str:
        """Describe one image (a path, a PIL image or an array), in up to caption_tokens
        tokens by default."""
        if max_new_tokens is None:
            max_new_tokens = self.caption_tokens
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
        for name, given in (("images", images), ("questions", questions)):
            if isinstance(given, (str, bytes)):
                raise UserError(f"ask_batch takes a list of {name}, one per image; got a "
                                f"{type(given).__name__} (ask takes one)")
        if len(images) != len(questions):
            raise UserError(f"ask_batch takes one question per image: {len(images)} images "
                            f"and {len(questions)} questions")
        if not images:
            return []
        size = self.config.vision.image_size
        policy = self.resize
        pixels = torch.stack([load_image_tensor(im, size, policy) for im in images])
        pixels = pixels.to(self.device)
        prompts = [self.prompt_ids(q) for q in questions]
        return generate_text(self, prompts, pixels, max_new_tokens, **sampling)

    def draw(self, prompt: str, n: int = 1, guidance: float = DRAW_GUIDANCE, **sampling
             ) -> list[Image.Image]:
        """n images of what the prompt describes; see draw_batch."""
        if n < 1:
            raise UserError(f"n must be at least 1, got {n}")
        return self.draw_batch([prompt] * n, guidance, **sampling)

    def draw_batch(self, prompts: list[str], guidance: float = DRAW_GUIDANCE,
                   temperature: float = DRAW_TEMPERATURE,
                   top_k: int | None = None, seed: int | None = None,
                   compile: bool = False) -> list[Image.Image]:
        """One image per prompt: the decoder writes the codes after "<bos> prompt <boi>",
        one cached step per code, and the VQ-VAE turns them into pixels. guidance is the
        classifier-free guidance scale: each step samples from the logits
        uncond + guidance * (cond - uncond), where uncond reads no prompt (1 turns it off).
        The defaults drew among the most faithful images of the settings measured (README,
        "Text to image")."""
        if self.vq is None:
            raise UserError("this model does not draw: train one with an image tokenizer, "
                            "`seemore train --recipe unified`")
        if not (isinstance(guidance, numbers.Real) and guidance >= 0):  # NaN too
            raise UserError(f"guidance must be a number >= 0, got {guidance!r}")
        if not prompts:
            return []
        tok, N = self.tokenizer, self.config.n_image_codes
        cond = [[tok.bos_id, *tok.encode(p.strip(), what="prompt"), tok.boi_id] for p in prompts]
        context = self.config.decoder.max_seq_len
        if max(map(len, cond)) + N > context:
            longest = max(prompts, key=len)
            raise UserError(f"the prompt {longest!r} is too long to draw: with its {N} image "
                            f"codes it needs {max(map(len, cond)) + N} tokens and the model's "
                            f"context is {context}")
        uncond = [[tok.bos_id, tok.boi_id]] * len(prompts) if guidance != 1 else None
        steps = generate(self, cond, None, N, temperature, top_k, seed=seed, stop_at_eos=False,
                         compile=compile, vocab=tok.code_ids, uncond=uncond, guidance=guidance,
                         step_embeddings=self.code_position.weight)
        codes = torch.stack(list(steps), dim=1) - tok.code_ids[0]  # (B, N)
        return to_pil(self.vq.decode(codes))
