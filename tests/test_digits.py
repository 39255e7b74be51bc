"""The digits as a first-class dataset: captions and questions through train, eval, ask and
caption, like the shapes world."""

import json

import numpy as np
import pytest
from PIL import Image

from seemore.cli import main
from seemore.config import apply_overrides, get_preset
from seemore.data import digits
from seemore.evaluation.vqa import evaluate
from seemore.train.loop import train


def test_digits_splits_are_disjoint_fixed_and_captioned():
    splits = {s: set(digits.split_indices(s).tolist()) for s in ("train", "val", "test")}
    assert sum(map(len, splits.values())) == 1797
    assert not (splits["train"] & splits["test"]) and not (splits["val"] & splits["test"])
    data = digits.Digits(32)
    image, label = data.scan("test", 3)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, data.scan("test", 3)[0])
    n = data.size("train")
    first, shifted = data.scan("train", 0), data.scan("train", n)
    assert first[1] == shifted[1] and not np.array_equal(first[0], shifted[0])
    assert digits.caption(7) == "a handwritten seven"


def test_every_digit_has_a_caption_and_two_questions():
    data = digits.Digits(32)
    answers = []
    for i in range(200):
        example = data.labelled("val", i)
        _, label = data.scan("val", i)
        name = digits.NAMES[label]
        assert example.caption == f"a handwritten {name}"
        assert digits.parse_caption(example.caption) == [name]
        (kind, question, answer), (kind2, question2, answer2) = example.questions
        assert (kind, question, answer) == ("digit", "what digit is this?", name)
        assert kind2 == "verify" and (answer2 == "yes") == question2.endswith(f" {name}?")
        answers.append(answer2)
    assert 0.35 < answers.count("yes") / len(answers) < 0.65
    again = data.labelled("val", 5), data.labelled("val", 5)
    assert again[0].questions == again[1].questions
    np.testing.assert_array_equal(again[0].image, again[1].image)
    assert digits.verify_question(8) == "is this an eight?"


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A tiny VLM trained for a few seconds on the digit question and captions, in fp32 so
    that it learns the same with or without a bf16 CPU (at 300 steps fp32 reached only 0.3)."""
    out = tmp_path_factory.mktemp("digits")
    config = apply_overrides(get_preset("tiny"), [
        "data.dataset=digits", "data.tasks=digit,caption", "train.steps=450",
        "train.precision=fp32"])
    return out, train(config, out, progress=False)


def test_tiny_vlm_learns_to_read_digits(digits_run):
    """Chance is 0.1; seconds of training must beat it three times over."""
    _, model = digits_run
    result = evaluate(model, "val", 200, with_captions=False)
    assert result["vqa_accuracy"]["digit"] > 0.3
    assert result["n_images"] == 200 and result["n_questions"] == 400


def test_eval_ask_and_caption_commands_on_digits(digits_run, tmp_path, capsys):
    out, model = digits_run
    assert main(["eval", str(out), "--scenes", "1000"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert set(result) == {"test"}  # the digits have no compositional split
    assert set(result["test"]["vqa_accuracy"]) == {"overall", "digit", "verify"}
    assert result["test"]["n_images"] == digits.Digits().size("test")  # all of the split
    assert "verify" in capsys.readouterr().out

    image, label = digits.Digits(32).scan("test", 0)
    path = tmp_path / "digit.png"
    Image.fromarray(image).save(path)
    assert main(["ask", str(out), str(path), "what digit is this?"]) == 0
    assert capsys.readouterr().out.strip() == model.ask(image, "what digit is this?")
    assert main(["caption", str(out), str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: {model.caption(image)}"
