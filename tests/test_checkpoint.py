"""Exact resume: a run killed mid-training and resumed ends bit-identical to one that was
never stopped; a damaged checkpoint falls back to the one before; pickles are refused."""

import contextlib
import json
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from seemore.cli import main
from seemore.config import Config, apply_overrides, get_preset
from seemore.errors import UserError
from seemore.objectives import build_model
from seemore.train.checkpoint import (
    checkpoints,
    gather_rng_states,
    load_checkpoint,
    save_checkpoint,
)
from seemore.train.loop import make_optimizer, train

# fp32, and router noise: the resumed run must restore the random generators too
OVERRIDES = ["train.steps=40", "train.checkpoint_every=5", "train.precision=fp32",
             "model.moe.num_experts=4", "train.final_eval_scenes=2", "train.log_every=5"]


def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    run = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "seemore", "train", "--preset", "tiny", "--out", str(run),
         "--no-progress", *OVERRIDES], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    # step 14's checkpoint is deleted once two later ones exist: wait for any from 14 on
    while not any(int(p.stem.removeprefix("step-")) >= 14
                  for p in (run / "checkpoints").glob("step-*.pt")):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (run / "model.safetensors").exists()  # it really died mid-run

    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    config = Config.load(run / "config.json")
    train(config, tmp_path / "unbroken", progress=False)
    resumed, unbroken = load_file(run / "model.safetensors"), load_file(
        tmp_path / "unbroken" / "model.safetensors")
    assert resumed.keys() == unbroken.keys()
    for name, value in unbroken.items():
        assert torch.equal(resumed[name], value), name
    assert len(checkpoints(run)) == 2  # train.keep_checkpoints


def start_training(run, *overrides) -> subprocess.Popen:
    """`seemore train` of the tiny preset in a process of its own, once it has logged a
    step past 5."""
    process = subprocess.Popen(
        [sys.executable, "-m", "seemore", "train", "--preset", "tiny", "--out", str(run),
         "--no-progress", *OVERRIDES, *overrides], stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").is_file() or '"step": 5,' not in (
            run / "metrics.jsonl").read_text():
        assert process.poll() is None, process.stderr.read()
        assert time.time() < deadline
        time.sleep(0.02)
    return process


def test_a_stopped_run_checkpoints_and_resumes_to_the_same_weights(tmp_path):
    """SIGTERM (a preempted machine, SLURM's time limit) ends the step in progress, writes a
    checkpoint even with train.checkpoint_every=0, and says how to go on."""
    run = tmp_path / "stopped"
    process = start_training(run, "train.checkpoint_every=0")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    message = process.stderr.read().strip().splitlines()[-1]
    assert message.startswith("stopped by SIGTERM after step ")
    assert message.endswith(f"go on with: seemore train --resume {run}")
    (checkpoint,) = checkpoints(run)
    assert str(checkpoint) in message
    assert not (run / "model.safetensors").exists()

    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    train(Config.load(run / "config.json"), tmp_path / "unbroken", progress=False)
    resumed, unbroken = load_file(run / "model.safetensors"), load_file(
        tmp_path / "unbroken" / "model.safetensors")
    for name, value in unbroken.items():
        assert torch.equal(resumed[name], value), name


def test_a_second_signal_stops_at_once(tmp_path):
    run = tmp_path / "run"
    process = start_training(run, "train.steps=100000", "train.checkpoint_every=0")
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    assert process.stderr.read().strip().endswith("interrupted")
    assert not checkpoints(run)


def test_a_damaged_checkpoint_falls_back_to_the_one_before(tmp_path):
    config = apply_overrides(get_preset("tiny"), [])
    model = build_model(config)
    optimizer = make_optimizer(model, model.run)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    rng = gather_rng_states(1)
    save_checkpoint(tmp_path, 4, model, optimizer, scaler, rng, keep=3)
    newest = save_checkpoint(tmp_path, 9, model, optimizer, scaler, rng, keep=3)
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated on disk
    with pytest.warns(UserWarning, match="step-0000009.pt is unreadable"):
        assert load_checkpoint(tmp_path)["step"] == 4
    newest.write_bytes(b"garbage")  # was refused as holding pickled objects
    with pytest.warns(UserWarning, match="step-0000009.pt is unreadable"):
        assert load_checkpoint(tmp_path)["step"] == 4


def test_a_checkpoint_with_pickled_objects_is_refused(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    torch.save({"step": 1, "payload": Config()}, tmp_path / "checkpoints" / "step-0000001.pt")
    with pytest.raises(UserError, match="holds pickled objects other than tensors"):
        load_checkpoint(tmp_path)
    with pytest.raises(UserError, match="no checkpoints to resume from"):
        load_checkpoint(tmp_path / "elsewhere")


@pytest.fixture
def file_size_limit():
    """Within it, writing a file past 20 KB fails as on a full disk (RLIMIT_FSIZE; Python
    ignores the SIGXFSZ that would otherwise kill the process)."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    @contextlib.contextmanager
    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    return limited


def test_a_full_disk_keeps_the_previous_checkpoint_and_model(tmp_path, file_size_limit):
    config = apply_overrides(get_preset("tiny"), [])
    model = build_model(config)
    optimizer = make_optimizer(model, model.run)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    rng = gather_rng_states(1)
    first = save_checkpoint(tmp_path, 4, model, optimizer, scaler, rng, keep=1)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with file_size_limit(), pytest.raises(UserError, match=(
            r"step-0000009.pt: could not write the checkpoint .*is the disk full\?\); the "
            f"previous one, {first}, is intact")):
        save_checkpoint(tmp_path, 9, model, optimizer, scaler, rng, keep=1)
    assert checkpoints(tmp_path) == [first] and load_checkpoint(tmp_path)["step"] == 4
    with file_size_limit(), pytest.raises(UserError, match="could not write the model .*"
                                          "what the folder held before is unchanged"):
        model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoints", "config.json", "model.safetensors", "tokenizer.json"]
    for name, value in load_file(tmp_path / "model.safetensors").items():
        assert torch.equal(saved[name], value), name


def test_weights_that_do_not_fit_the_config_are_one_line(tmp_path, capsys):
    build_model(apply_overrides(get_preset("tiny"), [])).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for change, expected in (
            ({"dim": 96, "n_heads": 2}, r"projector\.\S+ has shape \(64, 64\) in the file but "
                                        r"\(96, 64\) in the model config.json describes"),
            ({"n_layers": 3}, r"lacks decoder\.blocks\.2\.\S+ and \d+ more tensors, which the "
                              "model config.json describes has"),
            ({"n_layers": 1}, r"holds decoder\.blocks\.1\.\S+ and \d+ more tensors, which the "
                              "model config.json describes lacks")):
        (tmp_path / "config.json").write_text(json.dumps(
            {**config, "model": {**config["model"],
                                 "decoder": {**config["model"]["decoder"], **change}}}))
        assert main(["eval", str(tmp_path), "--scenes", "1"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and re.search(expected, err), err
