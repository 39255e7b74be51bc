from collections import Counter

import numpy as np

from seemore.data.shapes import (
    HELD_OUT,
    QUESTION_TYPES,
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
