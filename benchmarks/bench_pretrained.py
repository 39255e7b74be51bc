"""Pretrained parts: importing Hugging Face folders, and decoding and training with them,
against transformers on the same weights.

    python benchmarks/bench_pretrained.py [--scale real|tiny]

The benchmark writes the folders itself, with random weights in bf16 (as released
checkpoints are) and the real shapes from the released configs: a SmolLM2-135M decoder
(Llama type: 576 wide, 30 layers, 9 heads and 3 key/value heads, SwiGLU 1536, vocabulary
49152, tied head) and a SigLIP-B/16 vision tower at 224 px (768 wide, 12 layers). --scale
tiny shrinks both, for the test suite. Reported:

- import: seconds, peak RSS and the RSS the loading adds (over the process with its library
  imported) of seemore's `load_decoder` / `load_vision` (bf16), each in a fresh process,
  next to the weights' size on disk and transformers' `from_pretrained`; and of
  `seemore import`'s `import_vlm` (both parts in fp32, the weights training updates, and a
  new projector)
- generation: new tokens/s of greedy decoding, a 64-token prompt and --new-tokens more,
  fp32 and bf16, batch 1 and 16: seemore's KV-cache decode loop against transformers'
  `generate`, alternating run by run
- training: one AdamW step of the decoder (batch 4 x 256 tokens) and of the tower (batch 4
  images), forward and backward under bf16 autocast, seconds; for the decoder also with
  LoRA (rank --lora-rank, alpha twice the rank, on every block's linear layers): trainable
  parameters, AdamW state and gradient memory, both ways

Medians of --repeats timings.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers

sys.path.insert(0, str(Path(__file__).parent))
from common import count, emit, machine, median_time, peak_rss_mb, run_main  # noqa: E402

from seemore.device import autocast_context  # noqa: E402
from seemore.generation import generate  # noqa: E402
from seemore.layers.lora import add_lora  # noqa: E402
from seemore.pretrained.decoder import TextModel, load_decoder  # noqa: E402
from seemore.pretrained.vision import load_vision  # noqa: E402
from seemore.pretrained.vlm import import_vlm  # noqa: E402

SHAPES = {
    "real": {
        "decoder": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                        num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                        max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
                        tie_word_embeddings=True),
        "vision": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                       num_attention_heads=12, image_size=224, patch_size=16),
    },
    "tiny": {
        "decoder": dict(vocab_size=500, hidden_size=64, intermediate_size=96,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=512, tie_word_embeddings=True),
        "vision": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, image_size=32, patch_size=8),
    },
}


def write_folders(root: Path, scale: str) -> dict[str, Path]:
    import transformers

    torch.manual_seed(0)
    decoder = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SHAPES[scale]["decoder"]))
    decoder.to(torch.bfloat16).save_pretrained(root / "decoder")
    # a tokenizer.json of the vocabulary's size (one word per id), which `seemore import` needs
    vocab = {f"w{i}": i for i in range(decoder.config.vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(root / "decoder" / "tokenizer.json"))
    vision = transformers.SiglipVisionModel(
        transformers.SiglipVisionConfig(**SHAPES[scale]["vision"]))
    vision.to(torch.bfloat16).save_pretrained(root / "vision")
    return {"decoder": root / "decoder", "vision": root / "vision"}


def import_in_a_process(part: str, folder: Path, library: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--import-only", part, str(folder),
                           library], capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def import_only(part: str, folder: str, library: str) -> None:
    """Load one part (this process does nothing else) and print seconds, peak RSS and how
    much of it the loading added to the process with its library imported."""
    if part == "vlm":  # folder: the two folders' parent
        def load(folder, dtype):
            return import_vlm(Path(folder) / "vision", Path(folder) / "decoder")
    elif library == "seemore":
        load = load_decoder if part == "decoder" else load_vision
    else:
        import transformers
        load = (transformers.AutoModelForCausalLM if part == "decoder"
                else transformers.SiglipVisionModel).from_pretrained
    before = peak_rss_mb()
    start = time.perf_counter()
    load(folder, dtype=torch.bfloat16)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": round(seconds, 2), "peak_rss_mb": round(peak_rss_mb()),
                      "added_rss_mb": round(peak_rss_mb() - before)}))


def generation(folder: Path, new_tokens: int, repeats: int) -> dict:
    """Greedy decoding, seemore against transformers on the same weights, in fp32 and in
    bf16 (the checkpoint's own dtype), batch 1 and 16. The two alternate, run by run, so
    that a slow spell of this shared machine falls on both; the ratio is given as the
    ratio of the medians and the range of the per-pair ratios."""
    import transformers

    figures = {}
    for dtype in (torch.float32, torch.bfloat16):
        kind = str(dtype).removeprefix("torch.").replace("float32", "fp32").replace(
            "bfloat16", "bf16")
        ours = load_decoder(folder, dtype=dtype).eval()
        theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
        for batch in (1, 16):
            prompt = torch.randint(0, ours.config.vocab_size, (batch, 64),
                                   generator=torch.Generator().manual_seed(0))

            def run_ours(prompt=prompt, ours=ours):
                for _ in generate(TextModel(ours), prompt.tolist(), None, new_tokens,
                                  stop_at_eos=False):
                    pass

            def run_theirs(prompt=prompt, theirs=theirs):
                with torch.inference_mode():
                    theirs.generate(prompt, max_new_tokens=new_tokens,
                                    min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)

            run_ours()  # warm up
            run_theirs()
            times: dict[str, list[float]] = {"seemore": [], "transformers": []}
            for _ in range(repeats):
                for name, run in (("seemore", run_ours), ("transformers", run_theirs)):
                    times[name].append(median_time(run, 1)[0])
            key = f"generate_{kind}_batch{batch}"
            for name, seconds in times.items():
                figures[f"{key}_{name}_tokens_per_s"] = round(
                    batch * new_tokens / statistics.median(seconds), 1)
            pairs = [b / a for a, b in zip(times["seemore"], times["transformers"],
                                           strict=True)]
            ratio = (figures[f"{key}_seemore_tokens_per_s"]
                     / figures[f"{key}_transformers_tokens_per_s"])
            figures[f"{key}_seemore_over_transformers"] = round(ratio, 2)
            figures[f"{key}_pair_ratios_min_max"] = [round(min(pairs), 2), round(max(pairs), 2)]
            print(f"greedy generation, {kind}, batch {batch}: seemore "
                  f"{figures[f'{key}_seemore_tokens_per_s']:.0f} tokens/s, transformers "
                  f"{figures[f'{key}_transformers_tokens_per_s']:.0f} ({ratio:.2f}x; "
                  f"{min(pairs):.2f}-{max(pairs):.2f}x run by run)")
    return figures


def training_step(module, inputs, loss_of, repeats: int) -> dict:
    """Seconds of one AdamW step of module's trainable parameters, how many there are and
    how much memory their optimizer state (AdamW's two moments) and gradients take."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=True)

    def step(keep_grads=False):
        with autocast_context("bf16", torch.device("cpu")):
            loss = loss_of(module(*inputs))
        loss.backward()
        optimizer.step()
        if not keep_grads:
            optimizer.zero_grad(set_to_none=True)

    step(keep_grads=True)
    mb = 2**20
    gradients = sum(p.grad.numel() * p.grad.element_size() for p in trainable) / mb
    optimizer.zero_grad(set_to_none=True)
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values()
                for t in s.values() if t.dim()) / mb
    return {"s": round(median_time(step, repeats)[0], 3),
            "trainable": sum(p.numel() for p in trainable),
            "optimizer_state_mb": round(state, 1), "gradients_mb": round(gradients, 1)}


def decoder_steps(folder: Path, rank: int, repeats: int) -> dict:
    """One bf16 step of the decoder (batch 4 x 256 tokens), every weight trained, and with
    rank-`rank` LoRA adapters on all its blocks' linear layers, the weights frozen."""
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    ids = torch.randint(0, vocab, (4, 256), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(256).expand(4, 256)
    figures = {}
    for name in ("full", "lora"):
        torch.manual_seed(0)
        decoder = load_decoder(folder, dtype=torch.float32).train()
        if name == "lora":
            decoder.requires_grad_(False)
            add_lora(torch.nn.ModuleDict({"decoder": decoder}), ("decoder",), rank, 2.0 * rank)
        result = training_step(
            decoder, (decoder.embed(ids).detach(), positions),
            lambda logits: torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten()), repeats)
        figures.update({f"train_step_decoder_{name}_{k}": v for k, v in result.items()})
        print(f"one bf16 training step of the decoder, 4 x 256 tokens, "
              f"{'every weight' if name == 'full' else f'LoRA rank {rank}'}: "
              f"{result['s']:.2f} s, {result['trainable']:,} trainable parameters, AdamW "
              f"state {result['optimizer_state_mb']:.1f} MB, gradients "
              f"{result['gradients_mb']:.1f} MB")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=list(SHAPES), default="real")
    parser.add_argument("--new-tokens", type=count, default=64)
    parser.add_argument("--repeats", type=count, default=5, help="timings; the median is kept")
    parser.add_argument("--lora-rank", type=count, default=8)
    parser.add_argument("--import-only", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.import_only:
        import_only(*args.import_only)
        return
    figures = {"benchmark": "pretrained", "scale": args.scale}
    with tempfile.TemporaryDirectory() as tmp:
        folders = write_folders(Path(tmp), args.scale)
        for part, folder in folders.items():
            size = (folder / "model.safetensors").stat().st_size / 2**20
            figures[f"{part}_weights_mb"] = round(size)
            line = f"import {part} ({size:.0f} MB of bf16 weights):"
            for library in ("seemore", "transformers"):
                result = import_in_a_process(part, folder, library)
                figures.update({f"import_{part}_{library}_{k}": v for k, v in result.items()})
                line += (f" {library} {result['seconds']:.1f} s, peak RSS "
                         f"{result['peak_rss_mb']} MB ({result['added_rss_mb']} MB added);")
            print(line)
        result = import_in_a_process("vlm", Path(tmp), "seemore")
        figures.update({f"import_vlm_seemore_{k}": v for k, v in result.items()})
        print(f"seemore import, both parts and a new projector, in fp32: "
              f"{result['seconds']:.1f} s, peak RSS {result['peak_rss_mb']} MB "
              f"({result['added_rss_mb']} MB added)")
        figures.update(generation(folders["decoder"], args.new_tokens, args.repeats))

        figures.update(decoder_steps(folders["decoder"], args.lora_rank, args.repeats))
        vit = load_vision(folders["vision"], dtype=torch.float32).train()
        side = vit.config.image_size
        result = training_step(vit, (torch.rand(4, 3, side, side),),
                               lambda features: features.float().pow(2).mean(), args.repeats)
        figures["train_step_vision_s"] = result["s"]
        print(f"one bf16 training step of the vision tower, 4 images of {side} px: "
              f"{result['s']:.2f} s")
    emit({**figures, **machine()})


if __name__ == "__main__":
    run_main(main)
