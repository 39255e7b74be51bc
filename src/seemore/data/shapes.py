"""The built-in shapes world: procedurally rendered scenes with captions and questions.

A scene holds 1-3 objects, each in its own cell of a 3x3 grid (so they never overlap), with
a shape, a colour, a size and a position. Background tone, pixel noise, colours and the
place of an object inside its cell are jittered so the task is not a lookup. Everything is
deterministic in (split, index).

Splits: "train", "val" and "test" never contain the HELD_OUT colour-shape pairs; every scene
of "compositional" contains at least one of them, and its questions are about such an
object whenever they can be.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from seemore.data.labelled import Labelled
from seemore.errors import UserError

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 175, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 205),
    "orange": (245, 140, 25),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
POSITIONS = ("top left", "top", "top right", "left", "center", "right",
             "bottom left", "bottom", "bottom right")  # row-major over the 3x3 grid
HELD_OUT = frozenset({("red", "triangle"), ("blue", "circle"), ("yellow", "square")})
QUESTION_TYPES = ("color", "shape", "size", "position", "count", "exist")
NUMBERS = ("0", "1", "2", "3")
SPLITS = {"train": 0, "val": 1, "test": 2, "compositional": 3}
SUPERSAMPLE = 4  # sample points per pixel side, for anti-aliased edges (ShapesWorld.render)


@dataclass(frozen=True)
class Object:
    shape: str
    color: str
    size: str
    position: str

    def words(self, attrs: tuple[str, ...]) -> str:
        return " ".join([getattr(self, a) for a in ("size", "color", "shape") if a in attrs])


@dataclass(frozen=True)
class Scene:
    objects: tuple[Object, ...]
    image: np.ndarray  # (H, W, 3) uint8


def place_phrase(position: str) -> str:
    return "in the center" if position == "center" else f"at the {position}"


def caption(objects: tuple[Object, ...]) -> str:
    """'a large red circle at the top left and a small blue square in the center'."""
    ordered = sorted(objects, key=lambda o: POSITIONS.index(o.position))
    return " and ".join(f"a {o.size} {o.color} {o.shape} {place_phrase(o.position)}"
                        for o in ordered)


_OBJECT_RE = re.compile(
    rf"a ({'|'.join(SIZES)}) ({'|'.join(COLORS)}) ({'|'.join(SHAPES)}) "
    rf"(?:in the (center)|at the ({'|'.join(sorted(POSITIONS, key=len, reverse=True))}))\b"
)


def parse_caption(text: str) -> list[Object]:
    """The objects a caption describes; unparsable parts are ignored."""
    return [Object(shape=m[3], color=m[2], size=m[1], position=m[4] or m[5])
            for m in _OBJECT_RE.finditer(text)]


class ShapesWorld:
    question_types = QUESTION_TYPES
    eval_splits = ("test", "compositional")
    parse_caption = staticmethod(parse_caption)

    def __init__(self, image_size: int = 64):
        if image_size < 16:
            raise UserError(f"model.vision.image_size must be at least 16 for the shapes "
                            f"world, got {image_size}")
        self.image_size = image_size

    # --- scenes ---------------------------------------------------------------------------

    def rng(self, split: str, index: int, stream: int = 0) -> np.random.Generator:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
        return np.random.default_rng((SPLITS[split], index, stream))

    def scene(self, split: str, index: int) -> Scene:
        rng = self.rng(split, index)
        n = int(rng.integers(1, 4))
        cells = rng.choice(9, size=n, replace=False)
        novel_slot = int(rng.integers(n)) if split == "compositional" else -1
        objects = []
        for slot, cell in enumerate(cells):
            if slot == novel_slot:
                color, shape = sorted(HELD_OUT)[int(rng.integers(len(HELD_OUT)))]
            else:
                color, shape = self._pair(rng, allow_held_out=split == "compositional")
            size = SIZES[int(rng.integers(2))]
            objects.append(Object(shape, color, size, POSITIONS[int(cell)]))
        objects = tuple(objects)
        return Scene(objects, self.render(objects, rng))

    def _pair(self, rng: np.random.Generator, allow_held_out: bool) -> tuple[str, str]:
        while True:
            pair = (list(COLORS)[int(rng.integers(len(COLORS)))],
                    SHAPES[int(rng.integers(len(SHAPES)))])
            if allow_held_out or pair not in HELD_OUT:
                return pair

    def render(self, objects: tuple[Object, ...], rng: np.random.Generator) -> np.ndarray:
        """The scene's pixels (H, W, 3) uint8: each object anti-aliased by coverage, the
        share of a pixel's SUPERSAMPLE x SUPERSAMPLE sample points it covers, computed in
        numpy over the pixels around the object only. (The first renderer drew at 4x with
        Pillow and box-filtered down: the same images up to a sample point at an edge, in
        0.25 ms a scene against 0.32; tests/test_shapes.py states the tolerance.)"""
        n, ss = self.image_size, SUPERSAMPLE
        cell = n * ss / 3  # in sample points
        image = np.empty((n, n, 3))
        image[:] = rng.integers(25, 80) + rng.integers(-12, 13, size=3)  # the background
        for o in objects:
            row, col = divmod(POSITIONS.index(o.position), 3)
            radius = cell * (0.40 if o.size == "large" else 0.22) * rng.uniform(0.9, 1.05)
            slack = cell / 2 - radius - ss
            cx = (col + 0.5) * cell + rng.uniform(-0.5, 0.5) * slack
            cy = (row + 0.5) * cell + rng.uniform(-0.5, 0.5) * slack
            color = np.clip(np.array(COLORS[o.color]) + rng.integers(-20, 21, size=3), 0, 255)
            # the pixels the object may touch, and the sample points in them (i + 0.5 is
            # the centre of sample point i)
            top, bottom = int(cy - radius) // ss, int(cy + radius) // ss + 1
            left, right = int(cx - radius) // ss, int(cx + radius) // ss + 1
            y = np.arange(top * ss, bottom * ss)[:, None]
            x = np.arange(left * ss, right * ss)[None, :]
            if o.shape == "circle":
                inside = (x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= radius**2
            elif o.shape == "square":
                r = radius * 0.88  # a square of the same radius looks bigger than a circle
                # whole sample points from the one holding the left edge to the one holding
                # the right, as Pillow fills a rectangle
                inside = ((x >= int(cx - r)) & (x <= int(cx + r))
                          & (y >= int(cy - r)) & (y <= int(cy + r)))
            else:  # apex at radius above the centre, base at 0.8 radius below
                dx, dy = x + 0.5 - cx, y + 0.5 - cy
                inside = (dy <= radius * 0.8) & (1.8 * np.abs(dx) <= dy + radius)
            cover = inside.reshape(bottom - top, ss, right - left, ss).sum(axis=(1, 3)) / ss**2
            region = image[top:bottom, left:right]
            region += cover[..., None] * (color - region)
        # whole numbers from here on, exact in float64: a brightness offset, then pixel noise
        # (normal, sd 3, rounded), in place (the noise is 40% of a scene's time)
        pixels = np.floor(image + 0.5)
        pixels += rng.integers(-6, 7)
        noise = rng.standard_normal(pixels.shape)
        noise *= 3
        pixels += np.rint(noise, out=noise)
        return np.clip(pixels, 0, 255, out=pixels).astype(np.uint8)

    # --- questions ------------------------------------------------------------------------

    def question(self, scene: Scene, kind: str, rng: np.random.Generator,
                 split: str = "train") -> tuple[str, str] | None:
        """A (question, answer) pair of the given type, or None if the scene has no object
        that can be referred to unambiguously for it."""
        objs = scene.objects
        if kind == "count":
            return self._count_question(objs, rng)
        if kind == "exist":
            return self._exist_question(objs, rng, split)
        asked = {"color": "color", "shape": "shape", "size": "size", "position": "position"}[kind]
        targets = [o for o in objs if self._references(o, objs, asked)]
        novel = [o for o in targets if (o.color, o.shape) in HELD_OUT]
        if split == "compositional" and novel:
            targets = novel
        if not targets:
            return None
        target = targets[int(rng.integers(len(targets)))]
        refs = self._references(target, objs, asked)
        ref = refs[int(rng.integers(len(refs)))]
        template = {"color": "what color is {}?", "shape": "what shape is {}?",
                    "size": "what size is {}?", "position": "where is {}?"}[kind]
        return template.format(ref), getattr(target, asked)

    @staticmethod
    def _references(target: Object, objs: tuple[Object, ...], asked: str) -> list[str]:
        """Every unambiguous way to name target without giving away the asked attribute."""
        refs = []
        for attrs in (("shape",), ("color", "shape"), ("size", "shape"),
                      ("size", "color", "shape")):
            if asked in attrs:
                continue
            name = target.words(attrs)
            if sum(o.words(attrs) == name for o in objs) == 1:
                refs.append(f"the {name}")
        if asked == "shape":
            if sum(o.color == target.color for o in objs) == 1:
                refs.append(f"the {target.color} object")
        if asked != "position":
            refs.append(f"the object {place_phrase(target.position)}")
        return refs

    @staticmethod
    def _count_question(objs, rng) -> tuple[str, str]:
        which = int(rng.integers(3))
        if which == 0:
            return "how many objects are there?", str(len(objs))
        if which == 1:
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            return f"how many {shape}s are there?", str(sum(o.shape == shape for o in objs))
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        return f"how many {color} objects are there?", str(sum(o.color == color for o in objs))

    def _exist_question(self, objs, rng, split) -> tuple[str, str]:
        present = {(o.color, o.shape) for o in objs}
        if rng.random() < 0.5:
            novel = sorted(present & HELD_OUT)
            pool = novel if split == "compositional" and novel else sorted(present)
            color, shape = pool[int(rng.integers(len(pool)))]
            answer = "yes"
        else:
            while (pair := self._pair(rng, split == "compositional")) in present:
                pass
            color, shape = pair
            answer = "no"
        article = "an" if color[0] in "aeiou" else "a"
        return f"is there {article} {color} {shape}?", answer

    # --- examples -------------------------------------------------------------------------

    def size(self, split: str) -> None:
        return None  # every index is a new scene

    def labelled(self, split: str, index: int) -> Labelled:
        scene = self.scene(split, index)
        return Labelled(scene.image, caption(scene.objects), self.questions(split, index, scene))

    def regions(self, split: str, index: int) -> list[tuple[tuple[float, ...], dict[str, str]]]:
        """Each object's grid cell (x0, y0, x1, y1, fractions of the image side) and its
        shape, colour and size: what probe.py asks the image features to tell."""
        out = []
        for o in self.scene(split, index).objects:
            row, col = divmod(POSITIONS.index(o.position), 3)
            out.append(((col / 3, row / 3, (col + 1) / 3, (row + 1) / 3),
                        {"shape": o.shape, "color": o.color, "size": o.size}))
        return out

    def pair(self, split: str, index: int) -> tuple[np.ndarray, str]:
        """(image, caption): labelled without the questions, which cost half as much again."""
        scene = self.scene(split, index)
        return scene.image, caption(scene.objects)

    def questions(self, split: str, index: int, scene: Scene | None = None
                  ) -> list[tuple[str, str, str]]:
        """One (type, question, answer) per question type that the scene allows. Pass the
        scene if you already have it (it is what scene(split, index) returns)."""
        scene = scene or self.scene(split, index)
        rng = self.rng(split, index, stream=1)
        out = []
        for kind in QUESTION_TYPES:
            qa = self.question(scene, kind, rng, split)
            if qa is not None:
                out.append((kind, *qa))
        return out

    def corpus(self) -> str:
        """Text covering every character the world can produce (for building a tokenizer)."""
        parts = [*COLORS, *SHAPES, *SIZES, *POSITIONS, *NUMBERS, "yes no"]
        for i in range(300):
            scene = self.scene("train", i)
            parts.append(caption(scene.objects))
            parts.extend(f"{q} {a}" for _, q, a in self.questions("train", i))
        return "\n".join(parts)
