"""Probes: what a VLM's image features hold, attribute by attribute.

For every object of a built-in world (each object of a shapes scene, in its grid cell; the
whole image of a digit) the features of the tokens that cover it are averaged, weighted by
how much of the object's region each token covers, and a classifier is fitted to predict
the object's attributes from them (shape, colour, size; the digit): a logistic regression
(is the attribute linear in the features?) and a small MLP (is it there at all?). Fitted on
train images, scored on val images. Three kinds of feature are probed:

    pixels      the region's own pixels, resampled to 12x12 (what the image holds)
    vision      the ViT's patch features (after its final norm)
    projector   the visual tokens the decoder reads

each for the trained model and for a freshly initialised one of the same config (what the
architecture gives before any training).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from PIL import Image
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from seemore.data.images import to_tensor
from seemore.errors import UserError

PIXEL_SIDE = 12  # a region's pixels are resampled to this square for the pixel probe


def coverage(boxes: np.ndarray, n: int) -> np.ndarray:
    """(R, n*n) weights: the share of each region (R boxes x0, y0, x1, y1 as fractions of
    the image side) that each token of an n x n grid (row-major) covers; rows sum to 1."""
    edges = np.linspace(0, 1, n + 1)
    lo, hi = edges[:-1], edges[1:]

    def overlap(a0, a1):  # (R, n): 1-D overlap of each region's span with each token's
        return np.clip(np.minimum(a1[:, None], hi) - np.maximum(a0[:, None], lo), 0, None)

    x = overlap(boxes[:, 0], boxes[:, 2])
    y = overlap(boxes[:, 1], boxes[:, 3])
    w = (y[:, :, None] * x[:, None, :]).reshape(len(boxes), n * n)  # (R, n*n)
    return w / w.sum(1, keepdims=True)


def _pooled(tokens: torch.Tensor, boxes: np.ndarray) -> np.ndarray:
    """tokens (M, D) of one image on a square grid -> (R, D), one row per region."""
    n = int(round(tokens.shape[0] ** 0.5))
    w = torch.tensor(coverage(boxes, n), dtype=tokens.dtype)
    return (w @ tokens).numpy()


def _region_pixels(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    side = image.shape[0]
    crops = []
    for x0, y0, x1, y1 in (boxes * side).round().astype(int):
        crop = Image.fromarray(image[y0:y1, x0:x1]).resize((PIXEL_SIDE, PIXEL_SIDE))
        crops.append(np.asarray(crop, dtype=np.float32).ravel() / 255)
    return np.stack(crops)


@torch.no_grad()
def region_features(model, data, split: str, n_images: int, batch_size: int = 128
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Features per region of images 0..n_images-1 of a split: ({"pixels", "vision",
    "projector"}: (R, D) arrays) and the regions' labels ({attribute: (R,) strings})."""
    features: dict[str, list] = {"pixels": [], "vision": [], "projector": []}
    labels: dict[str, list] = {}
    for start in range(0, n_images, batch_size):
        indices = range(start, min(n_images, start + batch_size))
        examples = [(data.labelled(split, i).image, data.regions(split, i)) for i in indices]
        images = torch.stack([to_tensor(image) for image, _ in examples]).to(model.device)
        encoded = model.vision(images)  # (B, n_prefix + N, Dv), class token first if any
        vision = encoded[:, model.vision.n_prefix:].float().cpu()  # (B, N, Dv): the patches
        visual = model.projector(encoded).float().cpu()  # (B, M, D)
        for b, (image, regions) in enumerate(examples):
            boxes = np.array([box for box, _ in regions], dtype=np.float64)
            features["pixels"].append(_region_pixels(image, boxes))
            features["vision"].append(_pooled(vision[b], boxes))
            features["projector"].append(_pooled(visual[b], boxes))
            for _, attributes in regions:
                for name, value in attributes.items():
                    labels.setdefault(name, []).append(value)
    return ({k: np.concatenate(v) for k, v in features.items()},
            {k: np.array(v) for k, v in labels.items()})


def fit_probe(kind: str, x_train, y_train, x_test, y_test, seed: int = 0) -> float:
    """Held-out accuracy of a probe of one kind: "linear" (logistic regression) or "mlp"
    (one hidden layer of 256), on standardised features."""
    if kind == "linear":
        classifier = LogisticRegression(max_iter=1000, C=1.0)
    else:
        classifier = MLPClassifier((256,), alpha=1e-3, max_iter=300, early_stopping=True,
                                   random_state=seed)
    probe = make_pipeline(StandardScaler(), classifier)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(x_train, y_train)
    return float((probe.predict(x_test) == y_test).mean())


def probe(model, fresh, n_train: int = 3000, n_test: int = 800,
          kinds: tuple[str, ...] = ("linear", "mlp")) -> dict:
    """Probe accuracies of the trained model and of fresh, an untrained model of the same
    config, on its dataset: {"trained": {"vision": {"shape": {"linear": 0.9, "mlp": 0.95},
    ...}, "projector": ...}, "untrained": {...}, "pixels": {...}, "chance": {...},
    "n_train_regions": ..., "n_test_regions": ...}."""
    from seemore.data.datasets import dataset_of

    data = dataset_of(model.run)
    if not hasattr(data, "regions"):
        raise UserError(f"probing needs a built-in world (shapes or digits) whose objects "
                        f"are known; this run's data is {model.run.data.dataset}")
    if model.config.projector.tokens == "cls":
        raise UserError("this model reads only the ViT's class token, which has no place "
                        "in the image to probe")
    result: dict = {}
    for name, net in (("trained", model), ("untrained", fresh)):
        net.eval()
        train_x, train_y = region_features(net, data, "train", n_train)
        test_x, test_y = region_features(net, data, "val", n_test)  # the same labels twice
        if name == "trained":
            result["pixels"] = {a: {k: fit_probe(k, train_x["pixels"], train_y[a],
                                                 test_x["pixels"], test_y[a]) for k in kinds}
                                for a in train_y}
        result[name] = {
            where: {a: {k: fit_probe(k, train_x[where], train_y[a], test_x[where], test_y[a])
                        for k in kinds} for a in train_y}
            for where in ("vision", "projector")}
        result["chance"] = {a: float(max(np.mean(test_y[a] == v) for v in set(test_y[a])))
                            for a in test_y}
        result["n_train_regions"] = len(next(iter(train_y.values())))
        result["n_test_regions"] = len(next(iter(test_y.values())))
    return result


def format_probe_table(result: dict) -> str:
    """One row per (network, features), one column per attribute: linear / MLP accuracy."""
    attributes = list(result["chance"])
    header = f"{'features':<22}" + "".join(f"{a:>16}" for a in attributes)
    lines = [header, "-" * len(header)]

    def row(label: str, scores: dict) -> str:
        return f"{label:<22}" + "".join(
            f"{' / '.join(f'{scores[a][k]:.3f}' for k in scores[a]):>16}" for a in attributes)

    lines.append(row("pixels", result["pixels"]))
    for name in ("untrained", "trained"):
        for where in ("vision", "projector"):
            lines.append(row(f"{name} {where}", result[name][where]))
    lines.append(f"{'chance (majority)':<22}" + "".join(
        f"{result['chance'][a]:>16.3f}" for a in attributes))
    return "\n".join(lines)
