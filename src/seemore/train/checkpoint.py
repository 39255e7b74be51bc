"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the model's, the optimizer's and the fp16 gradient scaler's state, the
step it was taken after, and every random number generator (Python's, numpy's, torch's on
the CPU and on each CUDA device) of every process; the data position follows from the
step, since training examples are drawn by index. It is written atomically (a temporary
file, fsync, rename), so a run killed while writing leaves the previous checkpoint whole,
and the last ``keep`` are kept.

Loading uses ``torch.load(weights_only=True)``: tensors, numbers, strings and containers
only, so a file holding any other pickled object is refused rather than executed. A
checkpoint that cannot be read (truncated on disk, say) is skipped with a warning for the
one before it.
"""

from __future__ import annotations

import os
import pickle
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from seemore.errors import UserError

FOLDER = "checkpoints"


def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                      "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(world_size: int) -> list[dict]:
    """Every process's generators, in rank order (a collective: all processes call it)."""
    if world_size == 1:
        return [rng_state()]
    states = [None] * world_size
    torch.distributed.all_gather_object(states, rng_state())
    return states


def save_checkpoint(out_dir: Path, step: int, model, optimizer, scaler, rng: list[dict],
                    keep: int) -> Path:
    """Write RUN/checkpoints/step-NNNNNNN.pt atomically and delete all but the last keep.
    rng: every process's generators (gather_rng_states)."""
    folder = out_dir / FOLDER
    folder.mkdir(exist_ok=True)
    path = folder / f"step-{step:07d}.pt"
    temporary = path.with_suffix(".tmp")
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scaler": scaler.state_dict(), "rng": rng}
    try:
        with open(temporary, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a short write as either
        temporary.unlink(missing_ok=True)
        before = checkpoints(out_dir)
        kept = f"the previous one, {before[-1]}, is intact" if before else "there is none before it"
        raise UserError(f"{path}: could not write the checkpoint ({e}; is the disk full?); "
                        f"{kept}") from None
    os.replace(temporary, path)
    for old in checkpoints(out_dir)[:-keep]:
        old.unlink()
    return path


def checkpoints(out_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    return sorted((out_dir / FOLDER).glob("step-*.pt"))


def load_checkpoint(out_dir: Path) -> dict:
    """The newest readable checkpoint of a run (with a warning for each unreadable one)."""
    found = checkpoints(out_dir)
    if not found:
        raise UserError(f"{out_dir}: no checkpoints to resume from (train.checkpoint_every "
                        "sets how often a run writes them)")
    for path in reversed(found):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "Unsupported global" in str(e):  # not bytes that fail to unpickle
                raise UserError(f"{path}: holds pickled objects other than tensors and plain "
                                "values; refusing to load it") from None
            problem = e
        except (RuntimeError, EOFError, OSError, ValueError) as e:
            problem = e
        warnings.warn(f"{path} is unreadable ({str(problem).splitlines()[0]}); trying the "
                      "checkpoint before it", stacklevel=2)
    raise UserError(f"{out_dir}: none of its {len(found)} checkpoints can be read")
