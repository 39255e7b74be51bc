"""Visual question answering: ask a trained run about an image.

    python examples/visual_question_answering.py runs/default photo.png "what color is the circle?"
    python examples/visual_question_answering.py runs/default   # held-out shapes-world questions

Without an image it asks the questions of a few held-out shapes-world scenes and counts how
many answers match the truth exactly (the measure `seemore eval` reports per question type).
"""

from __future__ import annotations

import argparse

from PIL import Image

import seemore
from seemore.data.shapes import ShapesWorld


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a trained run (or model folder)")
    parser.add_argument("image", nargs="?", help="an image file")
    parser.add_argument("questions", nargs="*", help='for example "how many objects are there?"')
    parser.add_argument("--scenes", type=int, default=3)
    args = parser.parse_args()

    model = seemore.load(args.run)
    if args.image:
        for question in args.questions or ["describe the image."]:
            print(f"{question} -> {model.ask(args.image, question)}")
        return
    world, right, asked = ShapesWorld(model.config.vision.image_size), 0, 0
    for i in range(args.scenes):
        example = world.labelled("test", i)
        image = Image.fromarray(example.image)
        questions = [question for _, question, _ in example.questions]
        # one batched call answers every question about the scene
        answers = model.ask_batch([image] * len(questions), questions)
        for (_, question, truth), answer in zip(example.questions, answers, strict=True):
            right, asked = right + (answer == truth), asked + 1
            print(f"{'ok' if answer == truth else 'XX'} {question:<42} {answer:<14} "
                  f"truth: {truth}")
    print(f"{right} of {asked} answers exactly right")


if __name__ == "__main__":
    main()
