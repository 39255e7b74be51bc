import json
import select
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import seemore
from seemore.cli import main, parse_args
from seemore.errors import UserError


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "scene.png"
    from seemore.data.shapes import ShapesWorld

    Image.fromarray(ShapesWorld(32).scene("test", 0).image).save(path)
    return path


def run(*args):
    return subprocess.run([sys.executable, "-m", "seemore", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_ask_and_caption(trained_run, image_file, capsys):
    out, _ = trained_run
    assert main(["ask", str(out), str(image_file), "what color is the circle?"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["caption", str(out), str(image_file), str(image_file)]) == 0
    assert capsys.readouterr().out.count(str(image_file)) == 2


def test_compile_flag_decodes_the_same_answers(trained_run, image_file, capsys):
    out, _ = trained_run
    answers = []
    for flags in ([], ["--compile"]):
        assert main(["caption", str(out), str(image_file), *flags]) == 0
        answers.append(capsys.readouterr().out)
    assert answers[0] == answers[1]


def test_compile_without_a_cxx_compiler_is_a_clear_error(trained_run, image_file, tmp_path):
    """--compile where inductor finds no C++ compiler: one line saying so, no traceback."""
    import os

    out, _ = trained_run
    env = {**os.environ, "CXX": "/no/such/g++", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "seemore", "ask", str(out), str(image_file),
                             "what color is the circle?", "--compile"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2
    assert "error: torch.compile failed here (" in result.stderr
    assert "No working C++ compiler" in result.stderr and "Traceback" not in result.stderr


def test_eval_writes_the_documented_eval_json(trained_run, capsys):
    out, _ = trained_run
    assert main(["eval", str(out), "--scenes", "10"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert set(result) == {"test", "compositional"}
    for split in result.values():
        assert set(split["vqa_accuracy"]) == {"overall", "color", "shape", "size", "position",
                                              "count", "exist"}
        assert 0.0 <= split["caption_object_f1"] <= 1.0
    assert "caption F1" in capsys.readouterr().out


@pytest.mark.parametrize("make, args, message", [
    (None, ["missing.png", "what?"], "missing.png: no such file"),
    ("garbage", ["{f}", "what?"], "not a readable image"),
    ("empty", ["{f}", "what?"], "the image is empty (0 bytes)"),
    ("png", ["{f}", "   "], "the question is empty"),
    ("png", ["{f}", "WHAT color?"], "characters the tokenizer does not know: 'AHTW'"),
])
def test_bad_input_is_one_line_and_exit_code_2(trained_run, tmp_path, make, args, message):
    out, _ = trained_run
    f = tmp_path / "input.png"
    if make == "garbage":
        f.write_bytes(b"this is not an image")
    elif make == "empty":
        f.write_bytes(b"")
    elif make == "png":
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(f)
    result = run("ask", out, *[a.format(f=f) for a in args])
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_prompt_longer_than_context_is_rejected(trained_run, image_file):
    out, model = trained_run
    result = run("ask", out, image_file, "a" * 300)
    assert result.returncode == 2
    assert f"context is {model.config.decoder.max_seq_len} tokens" in result.stderr


def test_missing_run_folder_and_bad_override(tmp_path):
    result = run("ask", tmp_path / "nope", "x.png", "what?")
    assert result.returncode == 2 and "no such run folder" in result.stderr
    result = run("train", "--out", tmp_path / "r", "train.stepz=3")
    assert result.returncode == 2 and "unknown config key 'train.stepz'" in result.stderr


def test_a_zero_batch_size_flag_is_refused_not_ignored(tmp_path, capsys):
    """--batch-size 0 used to be dropped as unset: the run trained with the preset's 64."""
    assert main(["train", "--preset", "tiny", "--out", str(tmp_path / "r"),
                 "--batch-size", "0"]) == 2
    assert "train.batch_size must be positive" in capsys.readouterr().err


def test_overrides_and_files_may_come_after_options():
    """argparse alone stopped at the first option: `train a=1 --no-progress b=2` was
    "unrecognized arguments: b=2"."""
    args = parse_args(["train", "--preset", "tiny", "train.steps=2", "--no-progress",
                       "train.seed=3", "--compile"])
    assert args.overrides == ["train.steps=2", "train.seed=3"] and args.no_progress
    assert args.compile and args.preset == "tiny" and args.command == "train"
    args = parse_args(["caption", "RUN", "a.png", "--device", "cpu", "b.png"])
    assert args.images == ["a.png", "b.png"] and args.device == "cpu"
    with pytest.raises(SystemExit):
        parse_args(["train", "a=1", "--bogus", "b=2"])


def test_a_vocabulary_size_the_tokenizer_overrides_is_refused(tmp_path, capsys):
    """model.decoder.vocab_size=10 used to be replaced by the tokenizer's size, silently."""
    assert main(["train", "--preset", "tiny", "--out", str(tmp_path / "r"),
                 "model.decoder.vocab_size=10"]) == 2
    err = capsys.readouterr().err
    assert "model.decoder.vocab_size is the size of the run's tokenizer" in err
    assert "it cannot be overridden" in err


def test_an_image_size_the_world_cannot_draw_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--preset", "tiny", "--out", str(tmp_path / "r"),
                 "model.vision.image_size=8", "model.vision.patch_size=4"]) == 2
    assert "model.vision.image_size must be at least 16 for the shapes world, got 8" in (
        capsys.readouterr().err)


@pytest.mark.parametrize("flag", [["--out", "elsewhere"], ["--preset", "tiny"],
                                  ["--recipe", "clip"]])
def test_resume_refuses_the_flags_it_would_ignore(trained_run, capsys, flag):
    """--resume continues the run in place with its own config; these were dropped."""
    out, _ = trained_run
    assert main(["train", "--resume", str(out), *flag]) == 2
    assert f"{flag[0]} does not apply" in capsys.readouterr().err


def test_answers_stream_and_a_closed_pipe_stops_quietly(trained_run):
    """-n used to gather every example before the first answer (-n 100000000 ran out of
    memory before printing anything), and `| head` ended in a BrokenPipeError traceback."""
    out, _ = trained_run
    process = subprocess.Popen([sys.executable, "-m", "seemore", "caption", str(out), "--data",
                                "shapes", "-n", "100000000"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        assert select.select([process.stdout], [], [], 60)[0], "no answer within 60 s"
        assert process.stdout.readline().startswith(b"shapes test image 0: ")
        process.stdout.close()
        assert process.wait(timeout=120) == 141
        assert process.stderr.read() == b""
    finally:
        process.kill()


def test_a_data_sample_of_no_images_is_refused(trained_run, capsys):
    """caption/ask --data SOURCE -n 0 used to print nothing and exit 0."""
    out, _ = trained_run
    for command in ("caption", "ask"):
        assert main([command, str(out), "--data", "shapes", "-n", "0"]) == 2
        assert "-n must be at least 1, got 0" in capsys.readouterr().err


def test_a_rate_under_min_lr_is_refused_before_any_stage_but_old_models_load(
        trained_run, tmp_path, capsys):
    """train.lr=5e-5 under the default min_lr of 1e-4 used to train with a rate that
    climbed to 1e-4. A model saved with such a config still loads and answers."""
    out = tmp_path / "r"
    assert main(["train", "--preset", "tiny", "--out", str(out), "--recipe", "llava",
                 "instruct.train.lr=5e-5"]) == 2
    assert ("train.min_lr (0.0001) must be at most train.lr (5e-05), where the schedule "
            "decays to; set train.min_lr too") in capsys.readouterr().err
    assert not out.exists()  # refused before the first stage trained
    run_folder, _ = trained_run
    config = json.loads((run_folder / "config.json").read_text())
    config["train"]["lr"] = 2e-5  # as the pretrained recipe's instruct stage saved it
    old = tmp_path / "old"
    old.mkdir()
    for name in ("model.safetensors", "tokenizer.json"):
        (old / name).write_bytes((run_folder / name).read_bytes())
    (old / "config.json").write_text(json.dumps(config))
    assert seemore.load(old).config == seemore.load(run_folder).config


def test_a_run_that_cannot_start_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--preset", "tiny", "--out", str(out), "--data",
                 str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv: no such dataset" in capsys.readouterr().err
    assert not out.exists()


def test_train_command_end_to_end(tmp_path):
    result = run("train", "--preset", "tiny", "--out", tmp_path / "r", "--no-progress",
                 "train.steps=5", "train.final_eval_scenes=4")
    assert result.returncode == 0, result.stderr
    assert "compositional" in result.stdout and "test image 2" in result.stdout
    assert (tmp_path / "r" / "eval.json").exists()


def test_plot_draws_the_curves(trained_run, tmp_path, capsys):
    out, _ = trained_run
    target = tmp_path / "curves.png"
    assert main(["plot", str(out), "-o", str(target)]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    with Image.open(target) as image:
        assert image.format == "PNG" and image.width > 300
    assert main(["plot", str(tmp_path)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    assert main(["plot", str(out), "-o", str(tmp_path / "nope" / "c.png")]) == 2
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_a_device_this_machine_lacks_is_refused_by_name(trained_run, image_file, tmp_path):
    """It used to end in torch's traceback: "Torch not compiled with CUDA enabled" when
    training, "pin_memory=True requires ..." when loading."""
    out, _ = trained_run
    result = run("train", "--preset", "tiny", "--out", tmp_path / "r", "train.device=cuda:1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "device 'cuda:1': torch sees no CUDA GPU on this machine" in result.stderr
    assert not (tmp_path / "r").exists()
    result = run("ask", out, image_file, "what?", "--device", "cuda")
    assert result.returncode == 2 and "device 'cuda': torch sees no CUDA GPU" in result.stderr
    with pytest.raises(UserError, match="unknown device 'gpu'; use cpu, cuda, cuda:N, mps"):
        seemore.load(out, device="gpu")
    assert seemore.load(out, device="auto").device.type == "cpu"


def test_evaluation_sizes_are_checked_and_zero_final_scenes_skips_it(trained_run, tmp_path,
                                                                    capsys):
    """--scenes -5 used to write an eval.json of zeros over the run's own."""
    out, _ = trained_run
    evaluation = out / "eval.json"
    before = evaluation.read_bytes() if evaluation.exists() else None
    assert main(["eval", str(out), "--scenes", "-5"]) == 2
    assert "--scenes must be at least 1, got -5" in capsys.readouterr().err
    assert (evaluation.read_bytes() if evaluation.exists() else None) == before
    run = tmp_path / "r"
    assert main(["train", "--preset", "tiny", "--out", str(run), "--no-progress",
                 "train.steps=2", "train.final_eval_scenes=0"]) == 0
    assert "no final evaluation (train.final_eval_scenes=0)" in capsys.readouterr().out
    assert (run / "model.safetensors").exists() and not (run / "eval.json").exists()
