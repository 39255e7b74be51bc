"""Build a small dataset of real images, with captions, from what scikit-learn ships (no
download): crops of its two sample photographs and its handwritten digits.

    python examples/image_folder.py data/real            # an image folder, metadata.jsonl
    python examples/image_folder.py data/real.csv --csv  # the original seemore CSV (base64)
    seemore data check data/real
    seemore train --data data/real train.steps=600
    seemore caption runs/... data/real/0003.jpg

Half the images are crops of the photos (JPEG, 60-200 pixels a side, not square) captioned
with where the crop comes from ("the top left of the temple photo"); half are digit scans
(PNG, greyscale) captioned "a handwritten seven", and a third of those are asked "what
digit is this?" instead.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images

PHOTOS = ("temple", "flower")  # china.jpg, flower.jpg
PLACES = {"the top left": (0.25, 0.25), "the top right": (0.75, 0.25), "the center": (0.5, 0.5),
          "the bottom left": (0.25, 0.75), "the bottom right": (0.75, 0.75)}
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def examples(n: int, seed: int = 0) -> list[tuple[bytes, str, dict]]:
    """(encoded image, file suffix, row) for n images; the row has text or question/answer."""
    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    digits = load_digits()
    out = []
    for i in range(n):
        buffer = io.BytesIO()
        if i % 2 == 0:
            which = int(rng.integers(len(PHOTOS)))
            place = list(PLACES)[int(rng.integers(len(PLACES)))]
            photo = photos[which]
            h, w = photo.shape[:2]
            ch, cw = (int(v) for v in rng.integers(60, 200, size=2))
            cx, cy = PLACES[place]
            x = int(np.clip(cx * w - cw / 2 + rng.integers(-20, 21), 0, w - cw))
            y = int(np.clip(cy * h - ch / 2 + rng.integers(-20, 21), 0, h - ch))
            Image.fromarray(photo[y:y + ch, x:x + cw]).save(buffer, "JPEG", quality=90)
            out.append((buffer.getvalue(), ".jpg", {"text": f"{place} of the "
                                                            f"{PHOTOS[which]} photo"}))
        else:
            k = int(rng.integers(len(digits.target)))
            scan = (digits.images[k] * 255 / 16).astype(np.uint8)
            Image.fromarray(scan).resize((32, 32), Image.Resampling.NEAREST).save(buffer, "PNG")
            name = DIGITS[digits.target[k]]
            row = ({"question": "what digit is this?", "answer": name} if i % 3 == 1
                   else {"text": f"a handwritten {name}"})
            out.append((buffer.getvalue(), ".png", row))
    return out


def write_folder(out: Path, n: int, seed: int = 0) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metadata.jsonl", "w") as metadata:
        for i, (data, suffix, row) in enumerate(examples(n, seed)):
            name = f"{i:04}{suffix}"
            (out / name).write_bytes(data)
            metadata.write(json.dumps({"file_name": name, **row}) + "\n")
    return out


def write_csv(out: Path, n: int, seed: int = 0) -> Path:
    """The original seemore format: b64string_images and caption (caption rows only)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["b64string_images", "caption"])
        for data, _, row in examples(n, seed):
            if "text" in row:
                writer.writerow([base64.b64encode(data).decode(), row["text"]])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=400, help="images (default 400)")
    parser.add_argument("--csv", action="store_true", help="write one CSV file instead")
    args = parser.parse_args()
    path = write_csv(args.out, args.n) if args.csv else write_folder(args.out, args.n)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
