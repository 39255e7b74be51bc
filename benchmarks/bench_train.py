"""Training speed: samples/s and achieved GFLOP/s of one optimizer step.

    python benchmarks/bench_train.py --preset seemore-classic --batch-size 16 --text-len 32

A step is forward, backward, gradient clipping and AdamW on one batch of random images and
text (text-len tokens after the visual tokens), under the precision the training loop would
use. FLOPs are the usual model count: 6 x parameters x tokens for every matmul of the ViT and
the decoder, plus attention, for the full model (with MoE: the experts a token is routed
to), so the figure is comparable with other implementations. (With a class-token-only
projector our ViT skips most of its last block for the patches, so it does less work than
it is credited with; see models/vit.py.)
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402
from common import (  # noqa: E402
    count,
    emit,
    machine,
    matmul_peak,
    median_time,
    random_batch,
    run_main,
)

from seemore.config import apply_overrides, get_preset  # noqa: E402
from seemore.device import autocast_dtype  # noqa: E402
from seemore.objectives import build_model  # noqa: E402


def stem_macs(v) -> int:
    """Multiply-adds of the patch embedding, or of the convolutional stem's 3x3 stages
    (channels doubling up to dim, each halving the side) and its final 1x1."""
    if v.stem == "patch":
        return 3 * v.patch_size**2 * v.dim * v.grid_size**2
    n_stages = v.patch_size.bit_length() - 1
    macs, c_in, side = 0, 3, v.image_size
    for i in range(n_stages):
        c_out, side = v.dim >> (n_stages - 1 - i), (side + 1) // 2
        macs += 9 * c_in * c_out * side**2
        c_in = c_out
    return macs + c_in * v.dim * side**2


def step_flops(config, batch: int, text_len: int) -> float:
    v, d, m = config.model.vision, config.model.decoder, config.model

    def ffns(part: str, n_layers: int) -> int:
        """MLPs a token passes through: top_k in a mixture-of-experts block, else one."""
        return sum(m.moe.top_k if e else 1 for e in m.moe.layers(part, n_layers))

    vit_tokens = 1 + v.grid_size**2
    vit_ffn = 2 * v.dim * int(v.dim * v.mlp_ratio)
    vit = (4 * v.dim**2 * v.n_layers + vit_ffn * ffns("vision", v.n_layers)) * vit_tokens
    vit += 2 * v.n_layers * vit_tokens**2 * v.dim + stem_macs(v)
    dec_tokens = 1 + m.n_visual_tokens + text_len
    kv_dim = d.kv_heads * d.dim // d.n_heads
    attn = d.dim * (2 * d.dim + 2 * kv_dim) * d.n_layers
    ffn = 2 * d.dim * int(d.dim * d.mlp_ratio) * ffns("decoder", d.n_layers)
    dec = (attn + ffn) * dec_tokens + d.dim * d.vocab_size * dec_tokens
    dec += 2 * d.n_layers * dec_tokens**2 * d.dim
    proj_in = v.dim * m.projector.pixel_shuffle**2
    proj = (proj_in * d.dim + d.dim**2) * m.n_visual_tokens
    return 6.0 * batch * (vit + dec + proj)  # 2 FLOPs per multiply-add, x3 for backward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="seemore-classic")
    parser.add_argument("--batch-size", type=count, default=16)
    parser.add_argument("--text-len", type=count, default=32)
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the forward and backward (train.compile=true)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--steps", type=count, default=10, help="steps per timing")
    parser.add_argument("--repeats", type=count, default=5, help="timings; the median is kept")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = apply_overrides(get_preset(args.preset), [f"train.precision={args.precision}",
                                                       f"train.compile={args.compile}"])
    device = torch.device(args.device)
    model = build_model(config).train().to(device)
    config = model.run
    B, T = args.batch_size, args.text_len
    batch = random_batch(model, B, T, device)
    run_step = common.train_step(model, args.precision, args.compile, device)

    def step():
        run_step(*batch)
        common.synchronize(device)

    start = time.perf_counter()
    step()
    first_step_s = time.perf_counter() - start  # includes compiling, with --compile
    for _ in range(2):
        step()
    seconds, _ = median_time(lambda: [step() for _ in range(args.steps)], args.repeats)
    step_s = seconds / args.steps
    flops = step_flops(config, B, T)
    peak = {"fp32": matmul_peak(torch.float32, device),
            "bf16": matmul_peak(torch.bfloat16, device)}
    bf16 = autocast_dtype(args.precision, device) == torch.bfloat16
    achieved = flops / step_s / 1e9
    figures = {
        "benchmark": "train", "preset": args.preset, "batch_size": B, "text_len": T,
        "precision": "bf16" if bf16 else "fp32", "compile": args.compile,
        "first_step_s": round(first_step_s, 1), "samples_per_s": round(B / step_s, 1),
        "step_ms": round(step_s * 1000, 1), "gflop_per_step": round(flops / 1e9, 1),
        "achieved_gflop_s": round(achieved, 1), "peak_gflop_s_fp32": round(peak["fp32"], 1),
        "peak_gflop_s_bf16": round(peak["bf16"], 1),
        "fraction_of_peak": round(achieved / peak["bf16" if bf16 else "fp32"], 3),
        "device": device.type, **machine(device),
    }
    print(f"{device.type}, preset {args.preset}, batch {B}, text length {T}, "
          f"{figures['precision']}, compile {args.compile}, "
          f"median of {args.repeats} x {args.steps} steps (first step {figures['first_step_s']} s)")
    print(f"  {figures['samples_per_s']} samples/s ({figures['step_ms']} ms/step)")
    print(f"  {figures['gflop_per_step']} GFLOP/step assumed -> {figures['achieved_gflop_s']} "
          f"GFLOP/s achieved")
    print(f"  matmul peak here: {figures['peak_gflop_s_fp32']} GFLOP/s fp32, "
          f"{figures['peak_gflop_s_bf16']} bf16; the step reaches "
          f"{figures['fraction_of_peak']:.0%} of the {figures['precision']} peak")
    emit(figures)


if __name__ == "__main__":
    run_main(main)
