"""Text to image, end to end: train the image tokenizer and a model that captions, answers and
draws (or take one you trained), draw from descriptions, and let the same model describe
what it drew.

    python examples/text_to_image.py                       # trains runs/unified first (~30 min)
    python examples/text_to_image.py --run runs/unified/2-unified

It writes drawings.png: four drawings of each prompt, the prompt underneath. The prompts
include colour-shape pairs the training data never shows (a red triangle, a blue circle,
a yellow square: the shapes world holds them out for its compositional split).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import seemore
from seemore.config import get_preset
from seemore.grid import image_grid
from seemore.recipes import plan
from seemore.train.loop import train

PROMPTS = [
    "a large red circle at the top left",
    "a small green square in the center",
    "a large blue triangle at the bottom and a small yellow circle at the top right",
    "a large purple square at the left and a large orange triangle at the right",
    "a large red triangle in the center",  # held-out pairs: never seen in training
    "a large blue circle at the top and a large yellow square at the bottom",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="a run that draws (default: train one)")
    parser.add_argument("--out", default="drawings.png")
    parser.add_argument("--guidance", type=float, default=2.0)
    args = parser.parse_args()

    if args.run is None:
        stages = plan("unified", get_preset("default"), [], Path("runs/unified"))
        for stage in stages:  # the same as `seemore train --recipe unified`
            print(f"training stage {stage.name} -> {stage.folder}")
            train(stage.config, stage.folder)
        args.run = stages[-1].folder
    model = seemore.load(args.run)

    images, labels = [], []
    for i, prompt in enumerate(PROMPTS):
        drawn = model.draw(prompt, n=4, guidance=args.guidance, seed=i)
        images += drawn
        labels += [prompt] * 4
        # the same decoder reads its own drawing back
        print(f"{prompt}\n  the model describes its first drawing as: {model.caption(drawn[0])}")
    image_grid(images, labels).save(args.out)
    print(f"drawings: {args.out}")


if __name__ == "__main__":
    main()
