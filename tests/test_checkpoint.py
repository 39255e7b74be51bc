"""Exact resume: a run killed mid-training and resumed ends bit-identical to one that was
never stopped; a damaged checkpoint falls back to the one before; pickles are refused."""

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


def test_a_checkpoint_with_pickled_objects_is_refused(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    torch.save({"step": 1, "payload": Config()}, tmp_path / "checkpoints" / "step-0000001.pt")
    with pytest.raises(UserError, match="holds pickled objects other than tensors"):
        load_checkpoint(tmp_path)
    with pytest.raises(UserError, match="no checkpoints to resume from"):
        load_checkpoint(tmp_path / "elsewhere")
