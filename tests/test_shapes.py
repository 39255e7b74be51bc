from collections import Counter

import numpy as np
from PIL import Image, ImageDraw

from seemore.data.shapes import (
    COLORS,
    HELD_OUT,
    POSITIONS,
    QUESTION_TYPES,
    SUPERSAMPLE,
    ShapesWorld,
    caption,
    parse_caption,
)


def test_scenes_are_deterministic_by_split_and_index():
    a, b = ShapesWorld(64), ShapesWorld(64)
    s1, s2 = a.scene("train", 7), b.scene("train", 7)
    assert s1.objects == s2.objects and np.array_equal(s1.image, s2.image)
    assert a.scene("test", 7).objects != s1.objects or not np.array_equal(
        a.scene("test", 7).image, s1.image)
    assert a.questions("val", 3) == b.questions("val", 3)


def test_scene_contents():
    world = ShapesWorld(48)
    for i in range(200):
        scene = world.scene("train", i)
        assert scene.image.shape == (48, 48, 3) and scene.image.dtype == np.uint8
        assert 1 <= len(scene.objects) <= 3
        assert len({o.position for o in scene.objects}) == len(scene.objects)


def pillow_render(world: ShapesWorld, objects, rng) -> np.ndarray:
    """The first renderer: Pillow drawing at SUPERSAMPLE times the size, box-filtered
    down, with the same random draws in the same order as ShapesWorld.render."""
    s = world.image_size * SUPERSAMPLE
    cell = s / 3
    background = tuple(int(v) for v in rng.integers(25, 80) + rng.integers(-12, 13, size=3))
    canvas = Image.new("RGB", (s, s), background)
    draw = ImageDraw.Draw(canvas)
    for o in objects:
        row, col = divmod(POSITIONS.index(o.position), 3)
        radius = cell * (0.40 if o.size == "large" else 0.22) * rng.uniform(0.9, 1.05)
        slack = cell / 2 - radius - SUPERSAMPLE
        cx = (col + 0.5) * cell + rng.uniform(-0.5, 0.5) * slack
        cy = (row + 0.5) * cell + rng.uniform(-0.5, 0.5) * slack
        color = tuple(int(c) for c in np.clip(np.array(COLORS[o.color])
                                              + rng.integers(-20, 21, size=3), 0, 255))
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        if o.shape == "circle":
            draw.ellipse(box, fill=color)
        elif o.shape == "square":
            r = radius * 0.88
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=color)
        else:
            draw.polygon([(cx, cy - radius), (cx + radius, cy + radius * 0.8),
                          (cx - radius, cy + radius * 0.8)], fill=color)
    image = canvas.resize((world.image_size, world.image_size), Image.Resampling.BOX)
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-6, 7, size=(1, 1, 1))
    pixels = pixels + rng.normal(0, 3, size=pixels.shape).round().astype(np.int16)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def test_numpy_renderer_draws_the_pillow_renderers_images():
    """The same scenes as the first (Pillow) renderer, up to a sample point at an edge:
    on average under half a level of 255 apart, and fewer than 1% of the pixel values
    more than 16 levels apart (measured: 0.21 and 0.5%)."""
    world = ShapesWorld(64)
    differences = []
    for i in range(200):
        objects = world.scene("train", i).objects
        ours = world.render(objects, np.random.default_rng(i))
        reference = pillow_render(world, objects, np.random.default_rng(i))
        differences.append(np.abs(ours.astype(int) - reference.astype(int)))
    differences = np.stack(differences)
    assert differences.mean() < 0.5
    assert (differences > 16).mean() < 0.01


def test_compositional_split_holds_the_pairs_training_never_sees():
    world = ShapesWorld(64)
    for i in range(300):
        train_pairs = {(o.color, o.shape) for o in world.scene("train", i).objects}
        assert not train_pairs & HELD_OUT
        comp_pairs = {(o.color, o.shape) for o in world.scene("compositional", i).objects}
        assert comp_pairs & HELD_OUT


def test_captions_parse_back_to_the_objects():
    world = ShapesWorld(64)
    for i in range(300):
        objects = world.scene("compositional", i).objects
        assert Counter(parse_caption(caption(objects))) == Counter(objects)
    assert parse_caption("a large red circle at the top right") [0].position == "top right"
    assert parse_caption("nothing to see") == []


def test_questions_cover_every_type_with_balanced_yes_no():
    world = ShapesWorld(64)
    kinds, yes_no = Counter(), Counter()
    for i in range(600):
        for kind, question, answer in world.questions("train", i):
            kinds[kind] += 1
            assert question.endswith("?") and answer
            if kind == "exist":
                yes_no[answer] += 1
    assert set(kinds) == set(QUESTION_TYPES)
    assert abs(yes_no["yes"] / sum(yes_no.values()) - 0.5) < 0.06


def test_questions_are_answered_by_the_scene():
    world = ShapesWorld(64)
    for i in range(100):
        objects = world.scene("train", i).objects
        for kind, question, answer in world.questions("train", i):
            if kind == "count" and question == "how many objects are there?":
                assert answer == str(len(objects))
            if kind == "color":
                assert answer in {o.color for o in objects}
            if kind == "position":
                assert answer in {o.position for o in objects}
