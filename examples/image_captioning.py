"""Image captioning: describe images with a trained run.

    seemore train --out runs/default                      # once (~14 min on 2 CPU cores)
    python examples/image_captioning.py runs/default photo.png other.jpg
    python examples/image_captioning.py runs/default      # a few held-out shapes-world scenes

Captions come from `model.caption`, greedy unless --temperature is given.
"""

from __future__ import annotations

import argparse

from PIL import Image

import seemore
from seemore.data.shapes import ShapesWorld


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a trained run (or model folder)")
    parser.add_argument("images", nargs="*", help="image files (default: shapes-world scenes)")
    parser.add_argument("--temperature", type=float, default=0.0)
    args = parser.parse_args()

    model = seemore.load(args.run)
    if args.images:
        for path in args.images:
            print(f"{path}: {model.caption(path, temperature=args.temperature)}")
        return
    world = ShapesWorld(model.config.vision.image_size)
    for i in range(4):
        example = world.labelled("test", i)
        caption = model.caption(Image.fromarray(example.image), temperature=args.temperature)
        print(f"scene {i}\n  model: {caption}\n  truth: {example.caption}")


if __name__ == "__main__":
    main()
