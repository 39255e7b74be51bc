"""Turning what the user gives (a path, bytes, a PIL image, an array) into the model's input.

Policy, in order:

- decode with Pillow; an animated image gives its first frame; EXIF orientation is applied;
  given the size the image goes to, a JPEG decodes at 1/2, 1/4 or 1/8 scale where both
  sides stay at least that size (libjpeg's DCT scaling, Pillow's draft mode: a large
  photo for a small model decodes several times faster, its pixels within a few levels of
  the full decode's)
- refuse what cannot be a picture: undecodable or truncated bytes, a declared size over
  Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS, about 89 megapixels), or a
  side shorter than MIN_SIDE pixels
- convert to 8-bit RGB: 16- and 32-bit greyscale scaled down to 8 bits, palette, CMYK and
  greyscale converted, any alpha composited on white
- resize to the model's square input, bicubic: "squash" stretches the whole image to the
  square (the default; the built-in datasets are square already), "letterbox" keeps the
  aspect ratio and pads the short side with the image's mean colour
- scale pixels to [0, 1]

Every problem raises UserError naming the input and the problem.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from seemore.config import RESIZE_POLICIES
from seemore.errors import UserError

MIN_SIDE = 4  # pixels; a smaller image (say, 1x1) holds nothing to look at


def load_image(source, name: str | None = None, size: int | None = None) -> Image.Image:
    """An RGB PIL image from a path, encoded bytes, a PIL image or an (H, W), (H, W, 1),
    (H, W, 3) or (H, W, 4) array (uint8, or float in [0, 1]). name: how errors refer to the
    input (default: the path, or the type). size: the side it will be resized to, if known;
    encoded JPEGs then decode no larger than needed (see the module docstring)."""
    name = name or _name(source)
    if isinstance(source, (str, Path)):
        image = _decode(Path(source), name, size)
    elif isinstance(source, bytes):
        if not source:
            raise UserError(f"{name}: the image is empty (0 bytes)")
        image = _decode(io.BytesIO(source), name, size)
    elif isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = _from_array(source, name)
    else:
        raise UserError(f"cannot read an image from a {type(source).__name__}; "
                        "give a path, bytes, a PIL image or a numpy array")
    if min(image.size) < MIN_SIDE:
        raise UserError(f"{name}: the image is {image.width}x{image.height} pixels; it "
                        f"needs at least {MIN_SIDE} on each side")
    return _to_rgb(image)


def _decode(source: Path | io.BytesIO, name: str, size: int | None) -> Image.Image:
    if isinstance(source, Path):
        if not source.exists():
            if str(source).startswith(("http:/", "https:/")):  # a Path keeps one slash
                raise UserError(f"{name}: images are not downloaded; save it and give its "
                                "path")
            raise UserError(f"{name}: no such file")
        if not source.is_file():
            raise UserError(f"{name}: not a file")
        if source.stat().st_size == 0:
            raise UserError(f"{name}: the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # between 1x and 2x the limit Pillow only warns; a bomb is a bomb
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                image.seek(0)  # the first frame of an animation
                if size is not None:
                    image.draft(None, (size, size))  # a no-op for formats other than JPEG
                image.load()
                return ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UserError(f"{name}: refused, the declared size is over Pillow's "
                        f"decompression-bomb limit ({e})") from None
    except UnidentifiedImageError:
        # Pillow's message repeats the source, for bytes as "<_io.BytesIO object at 0x...>"
        raise UserError(f"{name}: not a readable image (no image format Pillow knows "
                        f"starts like this)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UserError(f"{name}: not a readable image ({e})") from None


def _from_array(a: np.ndarray, name: str) -> Image.Image:
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise UserError(f"{name}: image array has shape {a.shape}; expected (H, W), "
                        "(H, W, 1), (H, W, 3) or (H, W, 4)")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise UserError(f"{name}: image array has dtype {a.dtype}; expected uint8 or float")
        low, high = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if np.isnan(low) or np.isnan(high):
            raise UserError(f"{name}: image array has values that are not a number (NaN)")
        if low < 0 or high > 1:
            raise UserError(f"{name}: image array has float values from {low} to {high}; "
                            f"expected 0 to 1 (or uint8 for 0 to 255)")
        a = (a * 255).round().astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    return Image.fromarray(a)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit (or 32-bit) greyscale
        wide = np.asarray(image).astype(np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or wide.max() > 255 else 255.0
        image = Image.fromarray((np.clip(wide / top, 0, 1) * 255).round().astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _name(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else f"({type(source).__name__})"


def resize(image: Image.Image, size: int, policy: str = "squash") -> Image.Image:
    """The image at size x size by the named policy (see the module docstring)."""
    if policy not in RESIZE_POLICIES:
        raise UserError(f"unknown resize policy {policy!r}; choose {' or '.join(RESIZE_POLICIES)}")
    if policy == "letterbox" and image.width != image.height:
        side = max(image.size)
        fill = tuple(int(v) for v in np.asarray(image).reshape(-1, 3).mean(0).round())
        square = Image.new("RGB", (side, side), fill)
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        image = square
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return image


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, H, W) in [0, 1]; the model normalises further."""
    return torch.tensor(pixels).permute(2, 0, 1).float().div_(255.0)


def to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """float (B, 3, H, W) in [0, 1] -> B RGB images: the inverse of to_tensor."""
    rows = pixels.mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(row)) for row in rows]


def load_image_tensor(source, size: int, policy: str = "squash", name: str | None = None
                      ) -> torch.Tensor:
    """The model input for one image: (3, size, size)."""
    return to_tensor(np.asarray(resize(load_image(source, name, size), size, policy)))
