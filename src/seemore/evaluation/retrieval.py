"""Evaluation of a contrastive (CLIP) model: image-text retrieval and zero-shot digits.

The result has a stable form, written to ``eval.json``:

    {"test": {"image_to_text": {"recall@1": 0.41, "recall@5": 0.83, "recall@10": 0.95},
              "text_to_image": {...same keys...}, "n_pairs": 1000},
     "zero_shot_digits": {"accuracy": 0.93, "n_images": 360}}

Retrieval ranks the distinct captions among n_pairs held-out pairs for each image, and all
n_pairs images for each caption, by cosine similarity; a retrieved image is a hit when its
caption is the query word for word. (The shapes captions are nearly all distinct; the
digits have ten, each shared by many images, so for them image-to-text recall@k is top-k
classification accuracy over the ten.) zero_shot_digits is present for models trained on
the digits: each test image is classified by the nearest of the ten prompts
"a handwritten zero" ... "a handwritten nine".
"""

from __future__ import annotations

import torch

from seemore.data import digits
from seemore.data.datasets import dataset_of
from seemore.data.images import to_tensor

KS = (1, 5, 10)


@torch.no_grad()
def embed_images(model, images: list, batch_size: int = 256) -> torch.Tensor:
    out = []
    for i in range(0, len(images), batch_size):
        pixels = torch.stack([to_tensor(im) for im in images[i:i + batch_size]])
        out.append(model.encode_image(pixels.to(model.device)).float())
    return torch.cat(out)


@torch.no_grad()
def embed_texts(model, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    out = []
    for i in range(0, len(texts), batch_size):
        out.append(model.encode_text(*model.text_ids(texts[i:i + batch_size])).float())
    return torch.cat(out)


def recall_at_k(image: torch.Tensor, text: torch.Tensor, captions: list[str]) -> dict:
    """Recall@k both ways for unit embeddings image[i] <-> text[i] of captions[i]."""
    distinct = {c: n for n, c in enumerate(dict.fromkeys(captions))}
    label = torch.tensor([distinct[c] for c in captions])  # (N,): which distinct caption
    first = torch.tensor([captions.index(c) for c in distinct])  # (C,): a row of each
    similarity = image @ text.T  # (N, N)

    def recall(sim: torch.Tensor, truth: torch.Tensor, candidates: torch.Tensor) -> dict:
        top = sim.topk(min(max(KS), sim.shape[1]), dim=1).indices  # best-ranked per query
        hit = candidates[top] == truth[:, None]
        return {f"recall@{k}": hit[:, :k].any(1).float().mean().item() for k in KS}

    return {"image_to_text": recall(similarity[:, first], label, torch.arange(len(first))),
            "text_to_image": recall(similarity.T, label, label)}


def evaluate_clip(model, split: str = "test", n: int = 1000) -> dict:
    """Retrieval over n held-out pairs of a split of the run's dataset (all of it if it
    holds fewer), and zero-shot classification of the same images for the digits."""
    was_training = model.training
    model.eval()
    dataset = model.run.data.dataset
    data = dataset_of(model.run)
    n = min(n, data.size(split) or n)
    pairs = [data.pair(split, i) for i in range(n)]
    captions = [caption for _, caption in pairs]
    image = embed_images(model, [image for image, _ in pairs])
    result = {split: {**recall_at_k(image, embed_texts(model, captions), captions),
                      "n_pairs": n}}
    if dataset == "digits":
        prompts = embed_texts(model, [digits.caption(d) for d in range(len(digits.NAMES))])
        labels = torch.tensor([digits.NAMES.index(c.split()[-1]) for c in captions])
        predicted = (image @ prompts.T).argmax(1)
        result["zero_shot_digits"] = {"accuracy": (predicted == labels).float().mean().item(),
                                      "n_images": n}
    model.train(was_training)
    return result


def format_clip_table(result: dict, split: str = "test") -> str:
    if "skipped" in result:
        return "\n".join(f"{s}: not evaluated: {why}" for s, why in result["skipped"].items())
    lines = [f"{f'retrieval ({split})':<18}" + "".join(f"{f'R@{k}':>8}" for k in KS)]
    for name in ("image_to_text", "text_to_image"):
        scores = result[split][name]
        lines.append(f"{name:<18}" + "".join(f"{scores[f'recall@{k}']:>8.3f}" for k in KS))
    lines.append(f"({result[split]['n_pairs']} held-out pairs)")
    if "zero_shot_digits" in result:
        z = result["zero_shot_digits"]
        lines.append(f"zero-shot digits accuracy: {z['accuracy']:.3f} ({z['n_images']} test "
                     "images)")
    return "\n".join(lines)
