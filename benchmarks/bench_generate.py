"""Generation speed: new tokens/s of greedy decoding, with and without the KV cache, and
with the cached decode step compiled by torch.compile.

    python benchmarks/bench_generate.py

The model has the seemore-classic dimensions (random weights; speed does not depend on
them) with the context raised so that 200 new tokens fit. The timed call is the whole of
``generate``: image encoding, prefill and every decode step, for 200 new tokens per row
(no stop at <eos>). The decoder runs in fp32, the images are encoded as the model trained
(VLM.encoding_precision: bf16 autocast on a CPU that runs bf16 fast, fp32 with
--fp32-images, as a model trained in fp32 encodes them). The compiled mode's first call
compiles; its time is reported separately and not in the rate (inductor keeps what it
built in its on-disk cache, so a second run of this script compiles faster than the
first). Each mode also reports the time to the first token (image encoding and prefill)
and the rate of the steps after it, as the peers' benchmark does (t_first and
decode-only).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import count, counts, emit, machine, median_time, run_main  # noqa: E402

from seemore.config import apply_overrides, get_preset  # noqa: E402
from seemore.generation import generate  # noqa: E402
from seemore.objectives import build_model  # noqa: E402

QUESTION = "what color is the large circle?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="seemore-classic")
    parser.add_argument("--new-tokens", type=count, default=200)
    parser.add_argument("--batch-sizes", type=counts, default=[1, 16])
    parser.add_argument("--repeats", type=count, default=5, help="timings; the median is kept")
    parser.add_argument("--modes", default="cache,compiled,nocache",
                        help="which of cache, compiled and nocache to time")
    parser.add_argument("--fp32-images", action="store_true",
                        help="encode the images in fp32, as a model trained in fp32 does")
    args = parser.parse_args()
    modes = {"cache": dict(use_cache=True), "compiled": dict(use_cache=True, compile=True),
             "nocache": dict(use_cache=False)}
    unknown = set(args.modes.split(",")) - set(modes)
    if unknown:
        parser.error(f"--modes: unknown {', '.join(sorted(unknown))}; choose from "
                     f"{', '.join(modes)}")
    modes = {m: modes[m] for m in args.modes.split(",")}

    torch.manual_seed(0)
    config = get_preset(args.preset)
    context = config.model.n_visual_tokens + len(QUESTION) + args.new_tokens + 8
    overrides = [f"model.decoder.max_seq_len={context}"]
    if args.fp32_images:
        overrides.append("train.precision=fp32")
    model = build_model(apply_overrides(config, overrides)).eval()
    size = config.model.vision.image_size
    with model.encoding_precision(torch.device("cpu")):
        encoding = "bf16" if torch.is_autocast_enabled("cpu") else "fp32"
    print(f"preset {args.preset} (context {context}), {args.new_tokens} new greedy tokens, "
          f"decoder in fp32, images encoded in {encoding}, median of {args.repeats}")
    figures = {"benchmark": "generate", "preset": args.preset, "new_tokens": args.new_tokens,
               "images_encoded_in": encoding}
    for batch in args.batch_sizes:
        images = torch.randn(batch, 3, size, size)
        prompts = [model.prompt_ids(QUESTION)] * batch
        for mode, options in modes.items():
            firsts: list[float] = []  # seconds to the first token, one per call

            def call(prompts=prompts, images=images, options=options, firsts=firsts):
                start = time.perf_counter()
                steps = generate(model, prompts, images, args.new_tokens, stop_at_eos=False,
                                 **options)
                next(steps)
                firsts.append(time.perf_counter() - start)
                assert len(list(steps)) == args.new_tokens - 1

            start = time.perf_counter()
            call()
            if mode == "compiled":
                figures[f"compile_s_batch{batch}"] = round(time.perf_counter() - start, 1)
            firsts.clear()
            repeats = args.repeats if mode != "nocache" else max(1, args.repeats // 2)
            seconds, times = median_time(call, repeats)
            rate = batch * args.new_tokens / seconds
            first = statistics.median(firsts)
            decode = statistics.median(batch * (args.new_tokens - 1) / (t - f)
                                       for t, f in zip(times, firsts, strict=True))
            figures[f"tokens_per_s_batch{batch}_{mode}"] = round(rate, 1)
            figures[f"first_token_ms_batch{batch}_{mode}"] = round(first * 1e3, 1)
            figures[f"decode_only_tokens_per_s_batch{batch}_{mode}"] = round(decode, 1)
            print(f"  batch {batch:>3}, {mode:>8}: {rate:8.1f} new tokens/s "
                  f"({seconds:.2f}s per call; first token {first * 1e3:.1f} ms, then "
                  f"{decode:.0f} tokens/s)")
    emit({**figures, **machine()})


if __name__ == "__main__":
    run_main(main)
