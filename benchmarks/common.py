"""Shared helpers for the benchmarks: timing, the machine's matmul peak, JSON output, and
the checks of their arguments."""

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from seemore.errors import UserError

CPU = torch.device("cpu")


def count(text: str) -> int:
    """argparse type of a batch size or a number of steps, repeats or tokens: a whole
    number of at least 1 (0 would divide by zero or time nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def counts(text: str) -> list[int]:
    """argparse type of a comma-separated list of counts ("1,16")."""
    return [count(part) for part in text.split(",")]


def run_main(main) -> None:
    """Run a benchmark's main, reporting a UserError (an unknown preset, a missing run
    folder) as the seemore command does: `error: <message>` and exit code 2."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer sees it done (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device = CPU,
                iters: int = 10) -> float:
    """GFLOP/s of one large square matmul on this device, median of 3 timings."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    a @ b

    def run():
        for _ in range(iters):
            a @ b
        synchronize(device)

    seconds, _ = median_time(run, 3)
    return 2 * n**3 * iters / seconds / 1e9


def machine(device: torch.device = CPU) -> dict:
    figures = {"cpu": platform.processor() or platform.machine(),
               "threads": torch.get_num_threads(), "torch": torch.__version__}
    if device.type == "cuda":
        figures["gpu"] = torch.cuda.get_device_name(device)
    return figures


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB. On Linux the high-water mark of its own
    memory map (VmHWM): getrusage's ru_maxrss carries over the parent's across exec, so a
    child started by a large parent would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(figures: dict) -> None:
    """The last line of every benchmark: its figures as one JSON object."""
    print(json.dumps(figures))


def random_batch(model, batch: int, text_len: int, device: torch.device = CPU):
    """(ids, images, labels) of a VLM training batch of random data: <bos>, text_len random
    characters, then the <image> slots, on device."""
    tok, M = model.tokenizer, model.config.n_visual_tokens
    ids = torch.randint(5, len(tok), (batch, 1 + text_len + M))
    ids[:, 0] = tok.bos_id
    ids[:, 1 + text_len:] = tok.image_id
    size = model.config.vision.image_size
    images = torch.randn(batch, 3, size, size)
    return ids.to(device), images.to(device), ids.roll(-1, dims=1).to(device)


def train_step(model, precision: str, compile: bool = False,
               device: torch.device = CPU):
    """A function running one optimizer step (forward, backward, clipping, AdamW) of model
    on a batch, under the precision and with the allocator settings the training loop
    would use on device."""
    from seemore.device import autocast_context
    from seemore.train.allocator import keep_freed_memory
    from seemore.train.loop import make_optimizer

    keep_freed_memory()

    optimizer = make_optimizer(model, model.run)
    autocast = autocast_context(precision, device)
    forward = torch.compile(model) if compile else model

    def step(ids, images, labels):
        with autocast:
            _, loss = forward(ids, images, labels, sees=True, draws=False)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step
