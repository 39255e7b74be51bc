"""Shared helpers for the benchmarks: timing, the machine's matmul peak, JSON output."""

import json
import platform
import statistics
import time

import torch


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def matmul_peak(dtype: torch.dtype, n: int = 2048, iters: int = 10) -> float:
    """GFLOP/s of one large square matmul on this machine, median of 3 timings."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    seconds, _ = median_time(lambda: [a @ b for _ in range(iters)], 3)
    return 2 * n**3 * iters / seconds / 1e9


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__}


def emit(figures: dict) -> None:
    """The last line of every benchmark: its figures as one JSON object."""
    print(json.dumps(figures))
