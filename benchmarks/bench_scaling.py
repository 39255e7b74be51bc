"""Scaling curves: training samples/s against batch size and model width, decode tokens/s
against batch size and context length, as a table and a PNG.

    python benchmarks/bench_scaling.py --png docs/scaling.png

Training is bench_train's step (random data, the loop's precision, forward, backward,
clipping, AdamW) on the default preset at its real sequence length (text-len 98: the
seven tasks of an image as one conversation, 163 tokens with the 64 visual tokens), at
each batch size, and at batch 64 with the ViT and the decoder both widened (heads of 32
channels). Each point gives samples/s and its share of this machine's bf16 (or fp32)
matmul peak, counted as bench_train counts FLOPs: where that share stops growing, the
step is as matmul-bound as it gets. Decoding is the cached decode steps of generate on
the default preset's decoder (random weights, fp32 as bench_generate), after a prompt of
context-len tokens: new tokens/s of the decode steps alone (the prefill not counted).
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402
from bench_train import step_flops  # noqa: E402
from common import (  # noqa: E402
    count,
    counts,
    emit,
    machine,
    matmul_peak,
    median_time,
    random_batch,
    run_main,
)

from seemore.config import apply_overrides, get_preset  # noqa: E402
from seemore.device import autocast_dtype  # noqa: E402
from seemore.generation import generate  # noqa: E402
from seemore.objectives import build_model  # noqa: E402


def train_rate(overrides: list[str], batch: int, text_len: int, steps: int,
               repeats: int) -> tuple[float, float]:
    """(samples/s, GFLOP/s) of the default preset's training step with overrides."""
    torch.manual_seed(0)
    model = build_model(apply_overrides(get_preset("default"), overrides)).train()
    ids_images_labels = random_batch(model, batch, text_len)
    step = common.train_step(model, "auto")
    for _ in range(2):
        step(*ids_images_labels)
    seconds, _ = median_time(lambda: [step(*ids_images_labels) for _ in range(steps)], repeats)
    step_s = seconds / steps
    return batch / step_s, step_flops(model.run, batch, text_len) / step_s / 1e9


def decode_rate(batch: int, context: int, new_tokens: int, repeats: int) -> float:
    """New tokens/s of the cached decode steps after a prompt of context tokens."""
    torch.manual_seed(0)
    config = apply_overrides(get_preset("default"),
                             [f"model.decoder.max_seq_len={context + new_tokens}"])
    model = build_model(config).eval()
    prompts = torch.randint(5, len(model.tokenizer), (batch, context)).tolist()

    def decode_seconds() -> float:
        steps = generate(model, prompts, None, new_tokens, stop_at_eos=False)
        next(steps)  # the prefill's token
        start = time.perf_counter()
        for _ in steps:
            pass
        return time.perf_counter() - start

    decode_seconds()
    seconds = sorted(decode_seconds() for _ in range(repeats))[repeats // 2]
    return batch * (new_tokens - 1) / seconds


def plot(figures: dict, args, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    panels = [
        (args.batch_sizes, "train_batch{}_samples_per_s", "training batch (default, 163 tokens)",
         "samples/s"),
        (args.widths, "train_width{}_samples_per_s", "model width (batch 64)", "samples/s"),
        (args.decode_batches, f"decode_batch{{}}_context{args.decode_context}_tokens_per_s",
         f"decode batch (context {args.decode_context})", "new tokens/s"),
        (args.contexts, f"decode_batch{args.context_batch}_context{{}}_tokens_per_s",
         f"context length (decode batch {args.context_batch})", "new tokens/s"),
    ]
    for ax, (xs, key, xlabel, ylabel) in zip(axes, panels, strict=True):
        ax.plot(xs, [figures[key.format(x)] for x in xs], marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax, xs, key in ((axes[0], args.batch_sizes, "train_batch{}_fraction_of_peak"),
                        (axes[1], args.widths, "train_width{}_fraction_of_peak")):
        share = ax.twinx()
        share.plot(xs, [figures[key.format(x)] for x in xs], color="tab:orange",
                   linestyle="--", marker=".")
        share.set_ylim(0, 1)
        share.set_ylabel("share of matmul peak (dashed)")
    fig.suptitle(f"seemore on {figures['threads']} CPU threads, torch {figures['torch']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=counts, default=[16, 32, 64, 128, 256])
    parser.add_argument("--widths", type=counts, default=[128, 256, 384, 512])
    parser.add_argument("--text-len", type=count, default=98)
    parser.add_argument("--decode-batches", type=counts, default=[1, 4, 16, 64])
    parser.add_argument("--decode-context", type=count, default=128)
    parser.add_argument("--contexts", type=counts, default=[64, 128, 256, 512, 1024])
    parser.add_argument("--context-batch", type=count, default=1)
    parser.add_argument("--new-tokens", type=count, default=64)
    parser.add_argument("--steps", type=count, default=3, help="training steps per timing")
    parser.add_argument("--repeats", type=count, default=3, help="timings; the median is kept")
    parser.add_argument("--png", default="", help="write the curves to this PNG")
    args = parser.parse_args()

    bf16 = autocast_dtype("auto", torch.device("cpu")) == torch.bfloat16
    peak = matmul_peak(torch.bfloat16 if bf16 else torch.float32)
    figures = {"benchmark": "scaling", "text_len": args.text_len,
               "precision": "bf16" if bf16 else "fp32", "peak_gflop_s": round(peak, 1),
               **machine()}
    print(f"training, default preset, text-len {args.text_len}, {figures['precision']}, "
          f"matmul peak {peak:.0f} GFLOP/s; median of {args.repeats} x {args.steps} steps")
    points = [(f"batch{b}", f"batch {b:>4}, width 128", [], b) for b in args.batch_sizes]
    points += [(f"width{w}", f"batch   64, width {w:>3}",
                [f"model.{part}.{key}={value}" for part in ("vision", "decoder")
                 for key, value in (("dim", w), ("n_heads", w // 32))], 64)
               for w in args.widths]
    for name, label, overrides, batch in points:
        rate, gflops = train_rate(overrides, batch, args.text_len, args.steps, args.repeats)
        figures[f"train_{name}_samples_per_s"] = round(rate, 1)
        figures[f"train_{name}_fraction_of_peak"] = round(gflops / peak, 3)
        print(f"  {label}: {rate:7.1f} samples/s, {gflops:6.1f} GFLOP/s "
              f"({gflops / peak:.0%} of peak)")

    print(f"decoding, default preset decoder, fp32, {args.new_tokens} new tokens after the "
          "prompt, decode steps only")
    for batch, context in sorted({*((b, args.decode_context) for b in args.decode_batches),
                                  *((args.context_batch, c) for c in args.contexts)}):
        rate = decode_rate(batch, context, args.new_tokens, args.repeats)
        figures[f"decode_batch{batch}_context{context}_tokens_per_s"] = round(rate, 1)
        print(f"  batch {batch:>3}, context {context:>5}: {rate:8.1f} new tokens/s")
    if args.png:
        plot(figures, args, args.png)
        print(f"wrote {args.png}")
    emit(figures)


if __name__ == "__main__":
    run_main(main)
