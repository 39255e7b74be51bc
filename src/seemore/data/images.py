"""Turning what the user gives (a path, a PIL image, an array) into a normalised tensor.

Policy: decode, convert to RGB (alpha composited on white), resize by squashing to the
model's square input size with bicubic filtering, and scale pixels to [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from seemore.errors import UserError


def load_image(source) -> Image.Image:
    """An RGB PIL image from a path, a PIL image or an (H, W), (H, W, 3) or (H, W, 4) array
    (uint8, or float in [0, 1]). Raises UserError naming the input and the problem."""
    if isinstance(source, (str, Path)):
        image = _open(Path(source))
    elif isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = _from_array(source)
    else:
        raise UserError(f"cannot read an image from a {type(source).__name__}; "
                        "give a path, a PIL image or a numpy array")
    if image.width < 1 or image.height < 1:
        raise UserError(f"image {_name(source)} has no pixels ({image.width}x{image.height})")
    return _to_rgb(image)


def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if not path.is_file():
        raise UserError(f"{path}: not a file")
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as e:
        raise UserError(f"{path}: not a readable image ({e})") from None


def _from_array(a: np.ndarray) -> Image.Image:
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise UserError(f"image array has shape {a.shape}; expected (H, W), (H, W, 3) or "
                        "(H, W, 4)")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise UserError(f"image array has dtype {a.dtype}; expected uint8 or float")
        a = (np.clip(a, 0.0, 1.0) * 255).round().astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    return Image.fromarray(a)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _name(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else f"({type(source).__name__})"


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, H, W) in [0, 1]; the model normalises further."""
    return torch.tensor(pixels).permute(2, 0, 1).float().div_(255.0)


def load_image_tensor(source, size: int) -> torch.Tensor:
    """The model input for one image: (3, size, size), squashed to size x size."""
    image = load_image(source)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return to_tensor(np.asarray(image))
