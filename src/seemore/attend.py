"""Where a VLM looks: the attention that the position writing the answer's first token pays
to each visual token, layer by layer, drawn over the image (`seemore attend`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from seemore.data.images import load_image_tensor


@torch.no_grad()
def answer_attention(model, image, question: str) -> tuple[str, torch.Tensor, torch.Tensor]:
    """(the model's greedy answer, attention (n_layers, M) on the M visual tokens, and the
    image as the model sees it (3, H, W)). Row l is layer l's attention, averaged over its
    heads, from the last prompt position (which predicts the answer's first token); the
    rest of each row's mass is on the question's tokens."""
    size = model.config.vision.image_size
    pixels = load_image_tensor(image, size, model.run.data.resize)
    ids = torch.tensor([model.prompt_ids(question)], device=model.device)  # (1, T)
    captured: list[torch.Tensor] = []

    def capture(attn, args):
        x, rope = args[0], args[1]  # the block's normalised input and its RoPE tables
        q, k, _ = attn.project(x, rope)  # (1, nh, T, hd), (1, nkv, T, hd)
        k = k.repeat_interleave(attn.n_heads // attn.n_kv_heads, dim=1)  # (1, nh, T, hd)
        scores = q[:, :, -1:] @ k.transpose(-1, -2) / attn.head_dim**0.5  # (1, nh, 1, T)
        captured.append(scores.float().softmax(-1)[0, :, 0].mean(0))  # (T,)

    hooks = [block.attn.register_forward_pre_hook(capture) for block in model.decoder.blocks]
    try:
        x = model.embed(ids, pixels[None].to(model.device))
        positions = torch.arange(ids.shape[1], device=ids.device)[None]
        model.decoder(x, positions)
    finally:
        for hook in hooks:
            hook.remove()
    slots = ids[0] == model.tokenizer.image_id  # (T,)
    attention = torch.stack(captured)[:, slots].cpu()  # (n_layers, M)
    answer = model.ask(pixels.permute(1, 2, 0).numpy(), question)
    return answer, attention, pixels


def plot_attention(pixels: torch.Tensor, attention: torch.Tensor, title: str,
                   path: str | Path) -> None:
    """The image, then one panel per layer with its attention on the visual tokens laid
    over the image (each token drawn over the square of the image it comes from)."""
    from matplotlib.figure import Figure

    image = pixels.permute(1, 2, 0).numpy()
    n_layers, M = attention.shape
    side = int(round(M**0.5))
    fig = Figure(figsize=(2.4 * (n_layers + 1), 2.9))
    axes = fig.subplots(1, n_layers + 1, squeeze=False)[0]
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=9)
    extent = (-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5)
    for layer, ax in enumerate(axes[1:]):
        weights = attention[layer].numpy()
        ax.imshow(image)
        if side * side == M:
            heat = ax.imshow(weights.reshape(side, side), cmap="inferno", alpha=0.6,
                             extent=extent, vmin=0, vmax=max(float(weights.max()), 1e-6))
            fig.colorbar(heat, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(f"layer {layer}: {weights.sum():.0%} on the image", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def attention_shares(attention: torch.Tensor) -> list[str]:
    """One line per layer: its share of attention on the image and its three most-watched
    visual tokens."""
    lines = []
    for layer, row in enumerate(attention):
        top = np.argsort(-row.numpy())[:3]
        lines.append(f"layer {layer}: {row.sum():.0%} on the image; most on visual tokens "
                     + ", ".join(f"{t} ({row[t]:.0%})" for t in top))
    return lines
