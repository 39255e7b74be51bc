"""A user's dataset through every command: train (bad rows stop it or are skipped and
counted), eval, caption; and conversations trained with the loss on the answers only."""

import json

import numpy as np
import pytest
from PIL import Image

from seemore.cli import main
from seemore.data import digits
from seemore.data.collate import TaskDataset
from seemore.data.datasets import open_dataset
from seemore.prompt import IGNORE_INDEX, SEPARATOR
from seemore.tokenizer import CharTokenizer


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An image folder of 100 greyscale digit scans (0, 1, 2), half captioned, half asked
    about, and one row whose file is missing."""
    root = tmp_path_factory.mktemp("folder")
    data, rows = digits.Digits(24), []
    for i in range(100):
        image, label = data.scan("train", i)
        name = f"img{i:03}.png"
        Image.fromarray(image[:, :, 0]).save(root / name)  # mode L
        if i % 2:
            rows.append({"file_name": name, "text": digits.caption(label)})
        else:
            rows.append({"file_name": name, "question": digits.QUESTION,
                         "answer": digits.NAMES[label]})
    rows.insert(37, {"file_name": "gone.png", "text": "a handwritten zero"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_decoding_in_workers_and_without_the_cache_gives_the_same_examples(folder):
    from seemore.data.user import UserDataset

    plain = UserDataset(folder, 32, on_bad="skip")
    workers = UserDataset(folder, 32, on_bad="skip", num_workers=2, cache=False)
    assert workers.images is None and plain.images is not None
    assert [str(b) for b in workers.skipped] == [str(b) for b in plain.skipped]
    for split in ("train", "test"):
        for i in range(3):
            a, b = plain.labelled(split, i), workers.labelled(split, i)
            np.testing.assert_array_equal(a.image, b.image)
            assert (a.caption, a.questions) == (b.caption, b.questions)


def test_a_bad_row_stops_training_before_the_first_step(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--data", str(folder), "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"metadata.jsonl:38: image {folder / 'gone.png'} does not exist" in err
    assert "data.on_bad_sample=skip" in err
    assert not (out / "model.safetensors").exists()


def test_train_eval_and_caption_on_an_image_folder(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--data", str(folder), "--out", str(out),
                 "--no-progress", "--on-bad-sample", "skip", "train.steps=20",
                 "train.final_eval_scenes=50"]) == 0
    printed = capsys.readouterr().out
    assert "skipped 1 bad rows" in printed
    skipped = [json.loads(line) for line in open(out / "metrics.jsonl") if "skipped" in line]
    assert skipped[0]["skipped"]["rows"] == 1
    result = json.loads((out / "eval.json").read_text())
    test_rows = open_dataset(str(folder), 32, on_bad="skip").size("test")  # about a tenth
    assert 5 <= test_rows <= 20
    assert set(result) == {"test"} and result["test"]["n_images"] == test_rows
    assert set(result["test"]["vqa_accuracy"]) == {"overall", "answer"}
    assert 0 <= result["test"]["caption_object_f1"] <= 1
    assert main(["caption", str(out), str(folder / "img001.png")]) == 0
    assert capsys.readouterr().out.startswith(f"{folder / 'img001.png'}: ")


def test_conversations_train_on_the_answers_only(tmp_path):
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "a.png")
    turns = [{"from": "human", "value": "<image>\nwhat is it?"}, {"from": "gpt", "value": "a box"},
             {"from": "human", "value": "what color?"}, {"from": "gpt", "value": "red"}]
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"image": "a.png", "conversations": turns}) + "\n")
    data = open_dataset(str(path), 32)
    split = next(s for s in ("train", "val", "test") if data.size(s))  # the row's split
    tokenizer = CharTokenizer.from_text(data.corpus() + SEPARATOR)
    _, seq = TaskDataset(data, split, tokenizer, 4, ("caption", "answer"), 1, 1)[0]
    targets = [t for t in seq.labels if t != IGNORE_INDEX]
    eos = tokenizer.eos_id
    assert targets == tokenizer.encode("a box") + [eos] + tokenizer.encode("red") + [eos]
    assert seq.ids.count(tokenizer.image_id) == 4  # the image once
    assert np.asarray(data.labelled(split, 0).image).shape == (32, 32, 3)


def test_a_row_longer_than_the_context_is_bad(tmp_path):
    from seemore.data.user import UserDataset
    from seemore.errors import UserError

    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "a.png")
    (tmp_path / "rows.csv").write_text("image,caption\na.png,short\na.png," + "y" * 60 + "\n")
    with pytest.raises(UserError, match=r"rows.csv:3: 98 tokens with the image; the context"):
        UserDataset(tmp_path / "rows.csv", 32, context=64, n_visual=16)
    data = UserDataset(tmp_path / "rows.csv", 32, on_bad="skip", context=64, n_visual=16)
    assert len(data.records) == 1 and len(data.skipped) == 1


def test_mixture_sources_and_weights():
    from seemore.data.mixture import parse_sources
    from seemore.errors import UserError

    assert parse_sources("shapes:3, photos.csv") == [("shapes", 3.0), ("photos.csv", 1.0)]
    assert parse_sources("s3:bucket.csv") == [("s3:bucket.csv", 1.0)]
    for bad in ("shapes:0", "shapes:-1", "shapes,,digits"):
        with pytest.raises(UserError):
            parse_sources(bad)
    mix = open_dataset("shapes:3,digits:1", 32)
    assert mix.question_types[:2] == ("color", "shape") and "digit" in mix.question_types
    drawn = [mix.member("train", i) is mix.members["digits"] for i in range(2000)]
    assert 0.21 < np.mean(drawn) < 0.29  # a quarter
    example = mix.labelled("train", drawn.index(True))
    assert example.caption.startswith("a handwritten")


def test_train_and_eval_on_a_mixture(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--data", "shapes:2", "--data", str(folder),
                 "--on-bad-sample", "skip", "--out", str(out), "--no-progress",
                 "train.steps=5", "train.final_eval_scenes=8"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert set(result) == {"shapes:test", "shapes:compositional", f"{folder}:test"}
    assert "color" in result["shapes:test"]["vqa_accuracy"]
    assert set(result[f"{folder}:test"]["vqa_accuracy"]) == {"overall", "answer"}

    assert main(["eval", str(out), "--data", str(folder), "--on-bad-sample", "skip",
                 "--scenes", "5"]) == 0
    assert set(json.loads((out / "eval-data.json").read_text())) == {"test"}
    for i in range(30):
        Image.new("RGB", (16, 16)).save(tmp_path / f"b{i}.png")
    (tmp_path / "odd.csv").write_text("image,caption\n" + "".join(
        f"b{i}.png,a QUEER caption\n" for i in range(30)))
    assert main(["eval", str(out), "--data", str(tmp_path / "odd.csv")]) == 2
    assert "characters the tokenizer does not know: 'EQRU'" in capsys.readouterr().err


def test_caption_and_ask_on_a_datasets_test_images(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--data", str(folder), "--on-bad-sample", "skip",
                 "--out", str(out), "--no-progress", "train.steps=3",
                 "train.final_eval_scenes=4"]) == 0
    capsys.readouterr()
    assert main(["caption", str(out), "--data", str(folder), "--on-bad-sample", "skip",
                 "-n", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("metadata.jsonl:" in x and "(truth: a handwritten" in x
                                   for x in lines)
    assert main(["ask", str(out), "--data", str(folder), "--on-bad-sample", "skip",
                 "-n", "1"]) == 0
    assert "what digit is this? -> " in capsys.readouterr().out
    assert main(["ask", str(out), str(folder / "img000.png"), "--data", str(folder)]) == 2
    assert "not both" in capsys.readouterr().err


def test_the_tokenizer_depends_on_the_data_not_its_order(folder, tmp_path):
    from seemore.config import apply_overrides, get_preset
    from seemore.objectives.base import build_tokenizer

    lines = (folder / "metadata.jsonl").read_text().splitlines()
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for image in folder.glob("*.png"):
        (shuffled / image.name).write_bytes(image.read_bytes())
    (shuffled / "metadata.jsonl").write_text("\n".join(reversed(lines)) + "\n")
    tokenizers = [build_tokenizer(apply_overrides(get_preset("tiny"), [
        f"data.dataset={path}", "data.on_bad_sample=skip"])) for path in (folder, shuffled)]
    assert tokenizers[0] == tokenizers[1]


def test_starting_from_a_run_with_another_tokenizer_is_refused(folder, tmp_path, capsys):
    digits_run = tmp_path / "digits"
    assert main(["train", "--preset", "tiny", "--data", "digits", "--out", str(digits_run),
                 "--no-progress", "train.steps=2", "train.final_eval_scenes=2"]) == 0
    assert main(["train", "--preset", "tiny", "--out", str(tmp_path / "shapes"),
                 "--no-progress", "train.steps=2", f"train.init_from={digits_run}"]) == 2
    assert "its decoder was trained with a different tokenizer" in capsys.readouterr().err


def test_a_small_repeated_dataset_trains_and_says_why_it_is_not_evaluated(tmp_path, capsys):
    """240 rows that repeat six image/caption pairs, as people start: the rows of a pair share
    a split, here all train, so there is nothing to evaluate on; the run still succeeds."""
    from seemore.data.records import read_records
    from seemore.data.user import _split

    pairs = []
    for i in range(40):
        Image.new("RGB", (24, 24), (6 * i, 100, 200 - 4 * i)).save(tmp_path / f"{i}.png")
        rows = [{"file_name": f"{i}.png", "text": f"a box of colour {i}"}]
        (tmp_path / "metadata.jsonl").write_text(json.dumps(rows[0]) + "\n")
        if _split(next(read_records(tmp_path))) == "train":
            pairs.append(rows[0])
    rows = pairs[:6] * 40
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--data", str(tmp_path), "--out", str(out),
                 "--no-progress", "train.steps=4", "train.eval_every=2"]) == 0
    printed = capsys.readouterr().out
    assert "test: not evaluated:" in printed
    assert "240 usable rows, 6 distinct image/text pairs" in printed
    assert (out / "model.safetensors").is_file()
    assert "skipped" in json.loads((out / "eval.json").read_text())
    assert not any('"val"' in line for line in open(out / "metrics.jsonl"))


def test_a_split_column_decides_the_splits(tmp_path):
    rows = []
    for i in range(30):
        Image.new("RGB", (24, 24), (8 * i, 50, 50)).save(tmp_path / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": f"box {i}",
                     "split": ["train", "validation", "test"][i % 3]})
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = open_dataset(str(tmp_path), 32)
    assert [data.size(s) for s in ("train", "val", "test")] == [10, 10, 10]
    assert {data.labelled("test", i).caption for i in range(10)} == {
        f"box {i}" for i in range(2, 30, 3)}
