"""A grid of images with text under each: what `seemore draw` writes for several images and
what the README shows."""

from __future__ import annotations

import textwrap

from PIL import Image, ImageDraw, ImageFont


def image_grid(images: list[Image.Image], labels: list[str] | None = None,
               columns: int = 4, scale: int = 2) -> Image.Image:
    """The images side by side, columns to a row, each enlarged scale times (nearest
    neighbour, so the pixels stay visible), with its label wrapped underneath."""
    font = ImageFont.load_default()
    side = images[0].width * scale
    wrap = max(8, side // 6)  # the default font is about 6 pixels a character
    lines = [textwrap.wrap(label, wrap) for label in labels] if labels else [[]] * len(images)
    text_h = 12 * max(map(len, lines)) + (4 if labels else 0)
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    pad = 4
    grid = Image.new("RGB", (columns * (side + pad) + pad, rows * (side + text_h + pad) + pad),
                     "white")
    draw = ImageDraw.Draw(grid)
    for i, (image, text) in enumerate(zip(images, lines, strict=True)):
        x = pad + (i % columns) * (side + pad)
        y = pad + (i // columns) * (side + text_h + pad)
        grid.paste(image.resize((side, side), Image.Resampling.NEAREST), (x, y))
        for j, line in enumerate(text):
            draw.text((x, y + side + 2 + 12 * j), line, fill="black", font=font)
    return grid
