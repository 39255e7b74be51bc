"""Where a training step and a decode step spend their time, by kind of work.

    python benchmarks/profile_step.py --preset seemore-classic

torch.profiler records a few steps after a warm-up; every operator's own time (not counting
the operators it calls) goes to one category by its name: matmuls, attention (softmax,
masks, the SDPA kernels), the patch embedding's convolution, dtype casts (what autocast
and the backward's casts cost), norms, activations and other elementwise work, the loss,
the optimizer (AdamW, gradient clipping, zeroing), the rest (views, allocation, indexing,
copies into the KV cache). What no operator accounts for, the step's wall time less the
operators' total, is Python and the autograd engine between them ("outside operators").
The profiler adds a little time per operator, so the steps here run slower than in
bench_train; the shares are what to read. The training step is bench_train's (random
data, the loop's precision); the decode step is one cached step of generate (a batch of
new tokens attending over a cache of --context positions), in fp32 as bench_generate.
"""

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402
from common import count, emit, machine, random_batch, run_main  # noqa: E402

from seemore.config import apply_overrides, get_preset  # noqa: E402
from seemore.generation import _decode_step, compiled_step  # noqa: E402
from seemore.objectives import build_model  # noqa: E402

CATEGORIES = {  # first match of a substring of the operator's name wins
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul",
               "mkldnn::_linear", "mkldnn_linear", "aten::_addmm"),
    "attention": ("scaled_dot_product", "softmax", "isneginf", "aten::all", "aten::where",
                  "masked_fill", "logical_not"),
    "convolution": ("convolution",),
    "dtype casts": ("aten::copy_", "aten::_to_copy"),
    "norms": ("layer_norm", "rms_norm"),
    "loss": ("nll_loss", "log_softmax", "cross_entropy"),
    "optimizer": ("adam", "_foreach", "vector_norm", "clip_grad", "zero_grad", "Optimizer"),
    "activations, elementwise": ("gelu", "silu", "sigmoid", "tanh", "aten::mul", "aten::add",
                                 "aten::sub", "aten::div", "aten::neg", "aten::cat",
                                 "aten::sum", "aten::mean", "aten::fill_", "aten::zero_"),
}


def category(name: str) -> str:
    if name.startswith(("Torch-Compiled Region", "CompiledFunction", "## Call CompiledFxGraph")):
        return "compiled kernels"
    for kind, keys in CATEGORIES.items():
        if any(key in name for key in keys):
            return kind
    if name.startswith("cpp_fused") or name.startswith("graph_"):
        return "compiled kernels"
    return "other (views, allocation, indexing)"


def breakdown(run, steps: int) -> tuple[float, dict[str, float]]:
    """(wall ms per step, {category: ms per step}) of run() profiled over steps calls."""
    for _ in range(3):
        run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            run()
        wall = (time.perf_counter() - start) * 1000 / steps
    shares: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.self_cpu_time_total > 0:
            shares[category(event.key)] += event.self_cpu_time_total / 1000 / steps
    shares["outside operators (Python, autograd engine)"] = max(0.0, wall - sum(shares.values()))
    return wall, dict(shares)


def show(title: str, wall: float, shares: dict[str, float]) -> dict:
    print(f"{title}: {wall:.2f} ms per step under the profiler")
    for kind, ms in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<45} {ms:7.2f} ms  {ms / wall:5.1%}")
    return {"wall_ms": round(wall, 3),
            **{kind: round(ms / wall, 3) for kind, ms in shares.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="seemore-classic")
    parser.add_argument("--batch-size", type=count, default=16, help="training batch")
    parser.add_argument("--text-len", type=count, default=32)
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--compile", action="store_true", help="compile both steps")
    parser.add_argument("--decode-batch", type=count, default=1)
    parser.add_argument("--context", type=count, default=128, help="cached positions")
    parser.add_argument("--steps", type=count, default=5, help="profiled steps")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = apply_overrides(get_preset(args.preset), [
        f"train.precision={args.precision}",
        f"model.decoder.max_seq_len={max(args.context + 1, 1 + args.text_len + 64)}"])
    model = build_model(config).train()
    batch = random_batch(model, args.batch_size, args.text_len)
    train_step = common.train_step(model, args.precision, args.compile)
    print(f"preset {args.preset}, compile {args.compile}, {args.steps} profiled steps")
    train = show(f"training step (batch {args.batch_size}, text {args.text_len}, "
                 f"precision {args.precision})", *breakdown(lambda: train_step(*batch),
                                                            args.steps * 2))

    model.eval()
    decoder, B, L = model.decoder, args.decode_batch, args.context + 1
    step = compiled_step(decoder) if args.compile else _decode_step
    decoder.setup_cache(B, L, torch.float32)
    ids = torch.randint(decoder.config.vocab_size, (B, 1))
    position = torch.full((B, 1), args.context)
    keys = torch.zeros(B, L)  # every slot seen, added to the scores as generate does
    pos = torch.tensor([args.context])
    with torch.inference_mode():
        wall, shares = breakdown(lambda: step(decoder, ids, None, position, keys, pos),
                                 args.steps * 20)
    decoder.clear_cache()
    decode = show(f"decode step (batch {B}, {args.context} cached positions, fp32)", wall,
                  shares)
    emit({"benchmark": "profile_step", "preset": args.preset, "batch_size": args.batch_size,
          "text_len": args.text_len, "decode_batch": B, "context": args.context,
          "compile": args.compile, "train": train, "decode": decode, **machine()})


if __name__ == "__main__":
    run_main(main)
