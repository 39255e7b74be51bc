import json

import numpy as np
import pytest
import torch
from PIL import Image

from seemore.attend import answer_attention
from seemore.cli import main
from seemore.data.shapes import ShapesWorld
from seemore.evaluation.vqa import evaluate
from seemore.probe import coverage, fit_probe


def test_coverage_weights_each_token_by_its_share_of_the_region():
    # a 2x2 grid; the left half of the image is tokens 0 and 2, half each
    w = coverage(np.array([[0.0, 0.0, 0.5, 1.0]]), 2)
    np.testing.assert_allclose(w, [[0.5, 0.0, 0.5, 0.0]])
    # a 3x3 grid cell over a 4x4 token grid: the middle cell straddles the middle tokens
    w = coverage(np.array([[1 / 3, 1 / 3, 2 / 3, 2 / 3]]), 4).reshape(4, 4)
    assert w.sum() == pytest.approx(1.0)
    assert w[1:3, 1:3].sum() == pytest.approx(1.0) and w[1, 1] == pytest.approx(0.25)


def test_a_probe_finds_what_is_there_and_not_what_is_not():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=600)
    signal = np.eye(3)[y] + 0.3 * rng.normal(size=(600, 3))
    noise = rng.normal(size=(600, 3))
    assert fit_probe("linear", signal[:400], y[:400], signal[400:], y[400:]) > 0.9
    assert fit_probe("linear", noise[:400], y[:400], noise[400:], y[400:]) < 0.5


def test_shapes_regions_are_the_objects_cells():
    world = ShapesWorld(32)
    scene = world.scene("train", 3)
    regions = world.regions("train", 3)
    assert len(regions) == len(scene.objects)
    for (box, labels), o in zip(regions, scene.objects, strict=True):
        assert labels == {"shape": o.shape, "color": o.color, "size": o.size}
        assert box[2] - box[0] == pytest.approx(1 / 3)


def test_probe_command_writes_probe_json(trained_run, capsys):
    out, _ = trained_run
    assert main(["probe", str(out), "--scenes", "60", "--held-out", "30"]) == 0
    printed = capsys.readouterr().out
    assert "untrained vision" in printed and "trained projector" in printed
    result = json.loads((out / "probe.json").read_text())
    for name in ("trained", "untrained"):
        for where in ("vision", "projector"):
            for attribute in ("shape", "color", "size"):
                scores = result[name][where][attribute]
                assert set(scores) == {"linear", "mlp"}
                assert all(0 <= s <= 1 for s in scores.values())
    assert result["pixels"]["color"]["linear"] > 0.5  # the pixels hold the colour


def test_probe_refuses_too_few_scenes(trained_run, capsys):
    out, _ = trained_run
    assert main(["probe", str(out), "--scenes", "3"]) == 2
    assert "at least 10" in capsys.readouterr().err


def test_blind_scores_sit_next_to_the_real_ones(trained_run):
    _, model = trained_run
    result = evaluate(model, "val", 40, with_captions=False, blind=True)
    assert set(result["blind"]) == set(result["vqa_accuracy"])
    # the run learned the colour question from the image: a blank image loses it
    assert result["vqa_accuracy"]["color"] > result["blind"]["color"] + 0.1


def test_attend_draws_where_the_answer_looks(trained_run, tmp_path, capsys):
    out, model = trained_run
    image = tmp_path / "scene.png"
    Image.fromarray(ShapesWorld(32).scene("test", 0).image).save(image)
    question = "what color is the object at the top left?"
    answer, attention, _ = answer_attention(model, str(image), question)
    assert attention.shape == (model.config.decoder.n_layers,
                               model.config.n_visual_tokens)
    assert torch.all(attention >= 0) and torch.all(attention.sum(-1) <= 1 + 1e-5)
    assert answer == model.ask(str(image), question)
    target = tmp_path / "att.png"
    assert main(["attend", str(out), str(image), question, "-o", str(target)]) == 0
    assert "layer 0:" in capsys.readouterr().out
    with Image.open(target) as picture:
        assert picture.format == "PNG" and picture.width > 300
    assert main(["attend", str(out), str(image), question, "-o", str(tmp_path / "a.jpg")]) == 2
