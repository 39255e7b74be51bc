"""torchrun on the CPU (gloo, two processes on 127.0.0.1): the same global batch, seed and
data order give the same weights as one process; so does gradient accumulation."""

import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from seemore.config import apply_overrides, get_preset
from seemore.train.loop import train

# text windows: every example has the same number of targets, so the mean of the
# per-process losses is the mean over the whole batch
OVERRIDES = ["train.objective=lm", "train.steps=4", "train.batch_size=8",
             "train.precision=fp32", "train.log_every=1", "model.decoder.max_seq_len=64"]
CLI = [o for o in OVERRIDES if not o.startswith("train.batch_size")] + ["--batch-size", "8"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weights(folder):
    return load_file(folder / "model.safetensors")


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-5, msg=name)


@pytest.mark.timeout(330)  # past the subprocess's own limit, which reports its stderr
def test_two_processes_train_like_one(tmp_path):
    one = tmp_path / "one"
    train(apply_overrides(get_preset("tiny"), OVERRIDES), one, progress=False)
    two = tmp_path / "two"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         "--master_addr=127.0.0.1", f"--master_port={free_port()}",
         "-m", "seemore", "train", "--preset", "tiny", "--out", str(two), "--no-progress",
         *CLI], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same(weights(one), weights(two))
    logged = [line for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == 4  # one process writes the log


def test_gradient_accumulation_trains_like_one_batch(tmp_path):
    train(apply_overrides(get_preset("tiny"), OVERRIDES), tmp_path / "one", progress=False)
    train(apply_overrides(get_preset("tiny"), [*OVERRIDES, "train.grad_accum=4"]),
          tmp_path / "four", progress=False)
    assert_same(weights(tmp_path / "one"), weights(tmp_path / "four"))
