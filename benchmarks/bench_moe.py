"""Mixture of experts against dense: the seemoe preset next to a dense model with the same
active parameters per token.

    python benchmarks/bench_moe.py [--steps 300]

The dense model is seemore-classic with its decoder MLPs top_k times as wide (mlp_ratio 4
-> 8 for top-2), so a token passes through as many feed-forward weights in both. Reported:

- the layer alone: forward + backward of one MoE layer and of the dense FFN of the same
  active size, in bf16 autocast as in training and in fp32, and the ratio MoE / dense, on
  16 x 34 tokens (the random training batch below) and 16 x 69 (the mean batch of seemoe
  training on the shapes world: 1,109 tokens, padding included)
- training samples/s (random batches of 16, text length 32, as bench_train.py)
- greedy generation tokens/s with the KV cache, --new-tokens (200), batch 1 and 16, fp32
- validation loss (teacher-forced cross-entropy on --val-examples (1,024) val examples of
  the shapes world) after --steps steps of each, same seed and data

Speed figures are medians of --repeats timings; the losses are one training run each.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    count,
    emit,
    machine,
    median_time,
    random_batch,
    run_main,
    train_step,
)

from seemore.config import apply_overrides, get_preset  # noqa: E402
from seemore.device import autocast_context  # noqa: E402
from seemore.generation import generate  # noqa: E402
from seemore.layers.mlp import MLP  # noqa: E402
from seemore.layers.moe import MoE  # noqa: E402
from seemore.objectives import build_model, training_data  # noqa: E402
from seemore.train.loop import train  # noqa: E402


def configs() -> dict:
    moe = get_preset("seemoe")
    ratio = moe.model.decoder.mlp_ratio * moe.model.moe.top_k
    dense = apply_overrides(get_preset("seemore-classic"), [f"model.decoder.mlp_ratio={ratio}"])
    return {"seemoe": moe, "dense": dense}


def layer_cost(precision: str, tokens: int, repeats: int) -> dict:
    """Forward + backward seconds of one MoE layer and of the dense FFN of its active size,
    on a batch of 16 rows of tokens."""
    c = get_preset("seemoe").model
    dim, hidden = c.decoder.dim, int(c.decoder.dim * c.decoder.mlp_ratio)
    layers = {"moe": MoE(dim, hidden, c.moe.num_experts, c.moe.top_k, c.moe.noise,
                         c.moe.capacity_factor),
              "dense": MLP(dim, hidden * c.moe.top_k)}
    x = torch.randn(16, tokens, dim, requires_grad=True)
    autocast = autocast_context(precision, torch.device("cpu"))
    seconds = {}
    for name, layer in layers.items():
        layer.train()

        def run(layer=layer):
            for _ in range(20):
                with autocast:
                    out = layer(x)
                out.float().square().mean().backward()

        run()
        seconds[name] = median_time(run, repeats)[0] / 20
    return seconds


@torch.no_grad()
def val_loss(model, n: int) -> float:
    model.eval()
    dataset, collate = training_data(model, model.run, "val", n)
    total = count = 0.0
    for batch in DataLoader(dataset, batch_size=64, collate_fn=collate):
        _, loss = model(batch.ids, batch.images, batch.labels)
        tokens = (batch.labels != -100).sum().item()
        total, count = total + loss.item() * tokens, count + tokens
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=count, default=300, help="training steps for val loss")
    parser.add_argument("--repeats", type=count, default=5, help="timings; the median is kept")
    parser.add_argument("--new-tokens", type=count, default=200, help="tokens per generation")
    parser.add_argument("--val-examples", type=count, default=1024,
                        help="val examples the loss is measured on")
    args = parser.parse_args()
    figures = {"benchmark": "moe", "steps": args.steps, "new_tokens": args.new_tokens,
               "val_examples": args.val_examples}

    for tokens in (34, 69):
        for precision in ("bf16", "fp32"):
            seconds = layer_cost(precision, tokens, args.repeats)
            ratio = seconds["moe"] / seconds["dense"]
            print(f"layer forward+backward, 16 x {tokens} tokens, {precision}: MoE "
                  f"{seconds['moe'] * 1e3:.2f} ms, dense FFN of the same active size "
                  f"{seconds['dense'] * 1e3:.2f} ms: ratio {ratio:.2f}")
            key = f"16x{tokens}_{precision}"
            figures[f"layer_ms_moe_{key}"] = round(seconds["moe"] * 1e3, 2)
            figures[f"layer_ms_dense_{key}"] = round(seconds["dense"] * 1e3, 2)
            figures[f"layer_ratio_{key}"] = round(ratio, 2)

    for name, config in configs().items():
        torch.manual_seed(0)
        model = build_model(config).train()
        params = sum(p.numel() for p in model.parameters())
        step, batch = train_step(model, "auto"), random_batch(model, 16, 32)
        for _ in range(3):
            step(*batch)
        seconds = median_time(lambda step=step, batch=batch: [step(*batch) for _ in range(5)],
                              args.repeats)[0] / 5
        figures[f"{name}_params"] = params
        figures[f"{name}_train_samples_per_s"] = round(16 / seconds, 1)

        model.eval()
        question = model.prompt_ids("what color is the large circle?")
        context = config.model.decoder.max_seq_len
        new = min(args.new_tokens, context - len(question))
        for b in (1, 16):
            images = torch.randn(b, 3, config.model.vision.image_size,
                                 config.model.vision.image_size)

            def call(images=images, b=b, new=new, model=model, question=question):
                list(generate(model, [question] * b, images, new, stop_at_eos=False))

            call()
            rate = b * new / median_time(call, args.repeats)[0]
            figures[f"{name}_generate_tokens_per_s_batch{b}"] = round(rate, 1)

        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            trained = train(apply_overrides(config, [f"train.steps={args.steps}",
                                                     "train.eval_every=0"]), out,
                            progress=False)
        figures[f"{name}_train_s"] = round(time.perf_counter() - start, 1)
        figures[f"{name}_val_loss"] = round(val_loss(trained, args.val_examples), 4)
        print(f"{name}: {params / 1e6:.2f} M parameters, "
              f"{figures[f'{name}_train_samples_per_s']} training samples/s, generation "
              f"{figures[f'{name}_generate_tokens_per_s_batch1']} tokens/s at batch 1 and "
              f"{figures[f'{name}_generate_tokens_per_s_batch16']} at 16, val loss "
              f"{figures[f'{name}_val_loss']} after {args.steps} steps "
              f"({figures[f'{name}_train_s']} s)")
    emit({**figures, **machine()})


if __name__ == "__main__":
    run_main(main)
