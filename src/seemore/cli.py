"""The `seemore` command: train, eval, caption, ask, draw, generate, probe, attend, data check,
plot, import, export, merge-lora, serve, chat.

Every error a user can cause is printed as one line, ``error: ...``, with exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from seemore.config import (
    DRAW_GUIDANCE,
    DRAW_TEMPERATURE,
    PRESETS,
    TrainConfig,
    get_preset,
    override_keys,
)
from seemore.data.labelled import Labelled
from seemore.errors import UserError, first_line
from seemore.objectives import objective_of, training_data
from seemore.recipes import RECIPES, plan
from seemore.train.stop import Stopped


def _override_help() -> str:
    default = get_preset("default")
    lines = ["config keys (set as key=value; defaults shown are the 'default' preset's):"]
    for key, hint in override_keys().items():
        value = default
        for part in key.split("."):
            value = getattr(value, part)
        lines.append(f"  {key}={value}  ({getattr(hint, '__name__', hint)})")
    presets = ", ".join(PRESETS)
    return "\n".join(lines) + f"\n\npresets: {presets}"


def _add_sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperature", type=float, default=0.0, help="0 means greedy (default)")
    p.add_argument("--top-k", type=int, default=None, help="sample from the k likeliest tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling")
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps (default: cpu)")
    p.add_argument("--compile", action="store_true",
                   help="decode through torch.compile: two to three times the tokens/s, "
                        "after a one-time compile of seconds (about a minute on a cold "
                        "inductor cache); pays for long generations and many questions, not "
                        "for one short answer")


def _add_data_sample(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--data", action="append", metavar="SOURCE", help=what + " (repeatable)")
    p.add_argument("-n", type=int, default=5, help="how many test images with --data")
    p.add_argument("--on-bad-sample", choices=["error", "skip"], default="error",
                   help="a bad row of --data: stop (error, the default) or leave it out")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seemore", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model on a built-in dataset",
                       epilog=_override_help(), formatter_class=argparse.RawTextHelpFormatter)
    p.set_defaults(func=cmd_train)
    p.add_argument("--preset", default=None,
                   help=f"one of: {', '.join(PRESETS)} (default: default)")
    p.add_argument("--recipe", default=None,
                   help=f"one of: {', '.join(RECIPES)} (default: end-to-end)")
    p.add_argument("--out", default=None, help="run folder (default: runs/PRESET-TIME)")
    p.add_argument("--resume", default=None, metavar="RUN",
                   help="continue a run (one stage's folder) from its newest checkpoint "
                        "(train.checkpoint_every), with its config and any overrides given")
    p.add_argument("--data", action="append", metavar="SOURCE[:WEIGHT]",
                   help="shapes, digits, or a dataset's path: a .csv file, a .jsonl/.json "
                        "file of LLaVA conversations, or an image folder with "
                        "metadata.jsonl/metadata.csv (data.dataset); repeat it to mix "
                        "several, drawn in proportion to their weights (default 1)")
    p.add_argument("--on-bad-sample", choices=["error", "skip"], default=None,
                   help="a bad row of the dataset: stop before training (error, the default) "
                        "or leave it out and count it (skip)")
    p.add_argument("--image-column", default=None,
                   help="a CSV's column of image paths (data.image_column; default: "
                        "b64string_images or image)")
    p.add_argument("--text", default=None, metavar="FILE",
                   help="UTF-8 text for language-model training (data.text_file); default: "
                        "text written by the dataset")
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default=None,
                   help="auto (default): bf16 autocast where supported; fp16: autocast with "
                        "a gradient scaler (GPUs without bf16); fp32 turns autocast off")
    p.add_argument("--track", choices=["mlflow"], default=None,
                   help="log params, metrics and artifacts to MLflow too (train.track; "
                        "MLFLOW_TRACKING_URI, else RUN/mlflow.db)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="the global batch (train.batch_size), split evenly over torchrun's "
                        "processes and train.grad_accum micro-steps")
    p.add_argument("--compile", action="store_true",
                   help="run the training forward and backward through torch.compile "
                        "(train.compile=true)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    p = sub.add_parser("eval", help="evaluate a run on the test and compositional splits")
    p.set_defaults(func=cmd_eval)
    p.add_argument("run", help="run or model folder")
    p.add_argument("--scenes", type=int, default=None,
                   help="scenes (images) per split (default: the run's "
                        "train.final_eval_scenes)")
    p.add_argument("--data", action="append", metavar="SOURCE",
                   help="evaluate on this dataset instead of the run's own (repeatable, as "
                        "for train); the result goes to RUN/eval-data.json")
    p.add_argument("--on-bad-sample", choices=["error", "skip"], default="error",
                   help="a bad row of --data: stop (error, the default) or leave it out")
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps (default: cpu)")

    p = sub.add_parser("caption", help="describe images")
    p.set_defaults(func=cmd_caption)
    p.add_argument("run", help="run or model folder")
    p.add_argument("images", nargs="*", help="image files")
    _add_data_sample(p, "caption the first N captioned test images of a dataset instead")
    _add_sampling(p)

    p = sub.add_parser("ask", help="answer a question about an image")
    p.set_defaults(func=cmd_ask)
    p.add_argument("run", help="run or model folder")
    p.add_argument("image", nargs="?", help="image file")
    p.add_argument("question", nargs="?", help='for example "what color is the circle?"')
    _add_data_sample(p, "answer the questions of the first N test images of a dataset instead")
    _add_sampling(p)

    p = sub.add_parser("draw", help="draw images of a description (a run that draws: "
                                    "--recipe unified)")
    p.set_defaults(func=cmd_draw)
    p.add_argument("run", help="run or model folder")
    p.add_argument("prompt", help='for example "a large red circle at the top left"')
    p.add_argument("-o", "--out", default="drawing.png",
                   help="the PNG (default: drawing.png); a grid when -n is above 1")
    p.add_argument("-n", type=int, default=1, help="how many images (default: 1)")
    p.add_argument("--guidance", type=float, default=DRAW_GUIDANCE,
                   help="classifier-free guidance scale; 1 turns it off (default: "
                        f"{DRAW_GUIDANCE})")
    p.add_argument("--temperature", type=float, default=DRAW_TEMPERATURE,
                   help=f"default: {DRAW_TEMPERATURE}")
    p.add_argument("--top-k", type=int, default=None, help="sample from the k likeliest codes")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling")
    p.add_argument("--compile", action="store_true",
                   help="decode through torch.compile (see ask --help)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps (default: cpu)")

    p = sub.add_parser("probe", help="what a VLM's image features hold: probes per attribute "
                                     "of its encoder and projector, and of an untrained twin")
    p.set_defaults(func=cmd_probe)
    p.add_argument("run", help="run or model folder (trained on a built-in world)")
    p.add_argument("--scenes", type=int, default=3000, help="train images to fit the probes on")
    p.add_argument("--held-out", type=int, default=800, help="val images to score them on")
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps (default: cpu)")

    p = sub.add_parser("attend", help="where the answer looks: the attention on the visual "
                                      "tokens per decoder layer, drawn over the image")
    p.set_defaults(func=cmd_attend)
    p.add_argument("run", help="run or model folder")
    p.add_argument("image", help="image file")
    p.add_argument("question", help='for example "what shape is the red object?"')
    p.add_argument("-o", "--out", default="attention.png", help="the PNG (default: "
                                                                "attention.png)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps (default: cpu)")

    p = sub.add_parser("plot", help="draw a run's loss and val curves into a PNG")
    p.set_defaults(func=cmd_plot)
    p.add_argument("run", help="run folder (with metrics.jsonl)")
    p.add_argument("-o", "--out", default=None, help="the PNG (default: RUN/curves.png)")

    p = sub.add_parser("export", help="write a run's decoder as a Hugging Face folder "
                                      "(llama, or qwen2 with q/k/v biases) for transformers")
    p.set_defaults(func=cmd_export, device="cpu")
    p.add_argument("run", help="run or model folder whose decoder has the Llama family's "
                               "shape (decoder.mlp=swiglu)")
    p.add_argument("out", help="a new or empty folder")

    p = sub.add_parser("chat", help="a conversation about an image in the terminal")
    p.set_defaults(func=cmd_chat)
    p.add_argument("run", help="run or model folder")
    p.add_argument("image", help="image file (/image PATH switches it)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    _add_sampling(p)

    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server for a run "
                                     "(POST /v1/chat/completions), batching requests")
    p.set_defaults(func=cmd_serve)
    p.add_argument("run", help="run or model folder")
    p.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=32,
                   help="requests decoded together at most (default: 32)")
    p.add_argument("--max-queue", type=int, default=256,
                   help="requests waiting or running before 429 (default: 256)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="a request's longest decode, seconds (default: 60)")
    p.add_argument("--allow-local-files", metavar="DIR", default=None,
                   help="let image_url name files under DIR (default: data: URLs only)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps (default: cpu)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="compile the decode step with torch.compile before serving (faster "
                        "steps: README, 'Serve and chat'); default: where it works (cpu with "
                        "a C++ compiler, cuda), else eager, saying why")

    p = sub.add_parser("import", help="a VLM of a pretrained vision tower and decoder "
                                      "(Hugging Face folders), as a seemore model folder")
    p.set_defaults(func=cmd_import)
    p.add_argument("--vision", required=True, metavar="DIR",
                   help="a SigLIP or CLIP folder (a vision tower or a whole model)")
    p.add_argument("--decoder", required=True, metavar="DIR",
                   help="a Llama or Qwen2 folder with its tokenizer.json")
    p.add_argument("--out", required=True, metavar="MODEL", help="a new or empty folder")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="run config settings kept with the model, e.g. "
                        "model.projector.pixel_shuffle=2")

    p = sub.add_parser("merge-lora", help="merge a run's LoRA adapters into its weights, as "
                                          "a new model folder without adapters")
    p.set_defaults(func=cmd_merge_lora, device="cpu")
    p.add_argument("run", help="run or model folder with adapters.safetensors")
    p.add_argument("out", help="a new or empty folder")

    p = sub.add_parser("data", help="inspect a dataset")
    data = p.add_subparsers(dest="data_command", required=True)
    p = data.add_parser("check", help="read a whole dataset and report every bad row; exit "
                                      "code 1 if there is one")
    p.set_defaults(func=cmd_data_check)
    p.add_argument("source", help="a .csv file, a .jsonl/.json file of LLaVA conversations, "
                                  "or a folder with metadata.jsonl or metadata.csv")
    p.add_argument("--image-column", default="",
                   help="the CSV column of image paths (default: b64string_images or image)")
    p.add_argument("--run", default=None,
                   help="check against this run's tokenizer and context instead of the "
                        "preset's context")
    p.add_argument("--preset", default="default",
                   help="whose context and visual tokens to check lengths against")

    p = sub.add_parser("generate", help="continue a text prompt with the decoder alone")
    p.set_defaults(func=cmd_generate)
    p.add_argument("run", help="run or model folder (a language-model run, or any VLM), or "
                               "a Hugging Face Llama or Qwen2 folder with its tokenizer.json")
    p.add_argument("prompt", help='for example "what color"')
    p.add_argument("--max-new-tokens", type=int, default=200)
    _add_sampling(p)
    return parser


def cmd_train(args) -> None:
    from seemore.train.loop import train

    overrides = list(args.overrides)
    if args.precision:
        overrides.append(f"train.precision={args.precision}")
    if args.compile:
        overrides.append("train.compile=true")
    if args.batch_size is not None:
        overrides.append(f"train.batch_size={args.batch_size}")
    if args.track:
        overrides.append(f"train.track={args.track}")
    if args.data:
        overrides.append(f"data.dataset={','.join(args.data)}")
    if args.on_bad_sample:
        overrides.append(f"data.on_bad_sample={args.on_bad_sample}")
    if args.image_column:
        overrides.append(f"data.image_column={args.image_column}")
    if args.text:  # every stage, so that all of them build the same tokenizer
        overrides.append(f"data.text_file={args.text}")
    recipe = args.recipe or "end-to-end"
    if args.resume:
        for flag, value in (("--out", args.out), ("--preset", args.preset),
                            ("--recipe", args.recipe)):
            if value is not None:
                raise UserError(f"--resume continues {args.resume} in place with its own "
                                f"config: {flag} does not apply (key=value overrides do)")
        out = Path(args.resume)
        stages = [resumed_stage(out, overrides)]
    else:
        preset = get_preset(args.preset or "default")
        out = Path(args.out or f"runs/{preset.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
        stages = plan(recipe, preset, overrides, out)
    for stage in stages:  # before the first stage trains
        stage.config.train.check_schedule()
        if (stage.folder / "model.safetensors").exists() and not args.resume:
            raise UserError(f"{stage.folder} already holds a trained model; choose another --out")
    timings, model = [], None
    for stage in stages:
        t = stage.config.train
        print(f"stage {stage.name!r}: preset {stage.config.preset!r}, objective {t.objective}, "
              f"{t.steps} steps of {t.batch_size} -> {stage.folder}")
        start = time.perf_counter()
        model = train(stage.config, stage.folder, progress=not args.no_progress,
                      resume=bool(args.resume))
        timings.append({"stage": stage.name, "folder": str(stage.folder),
                        "seconds": round(time.perf_counter() - start, 1),
                        "samples": t.steps * t.batch_size})
        print(f"stage {stage.name!r} trained in {timings[-1]['seconds']:.0f}s")
    if len(stages) > 1:
        (out / "recipe.json").write_text(json.dumps(
            {"recipe": recipe, "stages": timings}, indent=2) + "\n")
    final = stages[-1]
    if final.config.train.final_eval_scenes:
        run_eval(model, final.folder, final.config.train.final_eval_scenes)
    else:
        print("no final evaluation (train.final_eval_scenes=0)")
    try_next = objective_of(final.config).show(model, final.folder)
    print(f"\nsaved to {final.folder}; try: {try_next}")


def resumed_stage(run: Path, overrides: list[str]):
    from seemore.config import Config, apply_overrides
    from seemore.recipes import PlannedStage

    if not (run / "config.json").is_file():
        raise UserError(f"{run}: not a run folder (no config.json); resume a stage's folder")
    config = apply_overrides(Config.load(run / "config.json"), overrides)
    return PlannedStage("resume", run, config)


def run_eval(model, out: Path, n_scenes: int, filename: str = "eval.json") -> dict | None:
    """Evaluate on the dataset model.run names, print the table and write
    out/filename; None for an objective without an evaluation (a language model).
    n_scenes: images per split for a VLM; held-out pairs (at least 1,000) for a CLIP model.
    A model with mixture-of-experts layers also gets its expert load on the test split, in
    the JSON and out/moe_load.png."""
    from seemore.data.datasets import dataset_of, missing
    from seemore.evaluation.expert_load import expert_load, plot_expert_load
    from seemore.layers.moe import moe_layers

    objective = objective_of(model.run)
    results = objective.evaluate(model, n_scenes)
    if results is None:
        return None
    print(objective.table(results))
    if moe_layers(model) and not missing(dataset_of(model.run), "test"):
        load = expert_load(model, *training_data(model, model.run, "test", 512))
        results["expert_load"] = {"split": "test", "layers": load}
        plot_expert_load(load, out / "moe_load.png", f"expert load on test: {out.name}")
        print(f"expert load per layer (uniform {1 / len(next(iter(load.values()))):.3f}): "
              f"{out / 'moe_load.png'}")
        for name, fractions in load.items():
            print(f"  {name:<24}" + " ".join(f"{f:.3f}" for f in fractions))
    (out / filename).write_text(json.dumps(results, indent=2) + "\n")
    if (out / "mlflow.json").is_file():  # a run tracked with --track mlflow
        from seemore.plot import plot_run
        from seemore.tracking import MLflowRun

        tracker = MLflowRun(out)
        tracker.log_metrics({filename.removesuffix(".json"): results}, model.run.train.steps)
        for path in (out / filename, out / "moe_load.png", plot_run(out)):
            if path.is_file():
                tracker.log_artifact(path)
    return results


def _png_path(path: str, what: str) -> Path:
    """The -o path of a picture, checked before any work is done."""
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise UserError(f"-o {out}: the {what} is written as a PNG; give a .png path")
    if not out.parent.is_dir():
        raise UserError(f"-o {out}: no such folder {out.parent}")
    return out


def cmd_draw(args) -> None:
    from seemore.grid import image_grid

    out = _png_path(args.out, "drawing")
    model = _load_vlm(args)
    images = model.draw(args.prompt, args.n, args.guidance, temperature=args.temperature,
                        top_k=args.top_k, seed=args.seed, compile=args.compile)
    (images[0] if args.n == 1 else image_grid(images, [args.prompt] * args.n)).save(out)
    print(out)


def cmd_probe(args) -> None:
    import torch

    from seemore.probe import format_probe_table, probe

    if args.scenes < 10 or args.held_out < 10:
        raise UserError("--scenes and --held-out must be at least 10")
    model = _load_vlm(args)
    torch.manual_seed(model.run.train.seed)  # the run's own initialisation
    fresh = objective_of(model.run).model(model.run, model.tokenizer).to(args.device)
    result = probe(model, fresh, args.scenes, args.held_out)
    print(f"probe accuracy on {result['n_test_regions']} held-out objects (linear / MLP), "
          f"fitted on {result['n_train_regions']}:")
    print(format_probe_table(result))
    out = Path(args.run) / "probe.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(out)


def cmd_attend(args) -> None:
    from seemore.attend import answer_attention, attention_shares, plot_attention

    out = _png_path(args.out, "picture")
    model = _load_vlm(args)
    answer, attention, pixels = answer_attention(model, args.image, args.question)
    print(f"{args.question} -> {answer}")
    print("\n".join(attention_shares(attention)))
    plot_attention(pixels, attention, f"{args.question} -> {answer}", out)
    print(out)


def cmd_data_check(args) -> int:
    from seemore.data.check import check, format_report

    if args.run:
        model = _load(argparse.Namespace(run=args.run, device="cpu"))
        config, tokenizer = model.run, model.tokenizer
    else:
        config, tokenizer = get_preset(args.preset), None
    report = check(args.source, args.image_column, tokenizer,
                   config.model.decoder.max_seq_len, config.model.n_visual_tokens)
    print(format_report(report, args.source))
    return 1 if report.bad else 0


def _load(args):
    import seemore

    folder = Path(args.run)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such run folder")
    return seemore.load(folder, args.device)


def _in_a_thread_of_its_own(fn, *args):
    """fn(*args), run in a new thread that has ended when this returns (or raises fn's
    exception)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # leaving the block joins the thread
        return pool.submit(fn, *args).result()


def _load_vlm(args):
    model = _load(args)
    if not objective_of(model.run).answers:
        raise UserError(f"{args.run} holds a {model.run.train.objective} model, which "
                        f"cannot {args.command}; give a run trained with the VLM objective")
    return model


def _with_data(config, args):
    """The run's config reading the --data sources instead of its own dataset."""
    data = dataclasses.replace(config.data, dataset=",".join(args.data),
                               on_bad_sample=args.on_bad_sample)
    return dataclasses.replace(config, data=data)


def _test_examples(model, args, wanted) -> Iterator[tuple[str, Labelled]]:
    """(where, example) for the first args.n test examples of the --data sources (none
    without) that have what wanted picks (a caption, questions), one at a time, so that
    the answers print as they come."""
    from seemore.data.datasets import dataset_of, members

    if not args.data:
        return
    if args.n < 1:
        raise UserError(f"-n must be at least 1, got {args.n}")
    data = dataset_of(_with_data(model.run, args))
    found = 0
    for name, source in members(data).items():
        for i in range(source.size("test") or args.n):
            if found == args.n:
                return
            example = source.labelled("test", i)
            if wanted(example):
                found += 1
                yield example.location or f"{name or args.data[0]} test image {i}", example


def _sampling(args) -> dict:
    return {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
            "seed": args.seed, "compile": args.compile}


def cmd_eval(args) -> None:
    model = _load(args)
    filename = "eval.json"
    if args.data:
        model.run = _with_data(model.run, args)
        filename = "eval-data.json"
    if args.scenes is not None and args.scenes < 1:
        raise UserError(f"--scenes must be at least 1, got {args.scenes}")
    # a run trained without a final evaluation is evaluated at the default size
    n_scenes = args.scenes or model.run.train.final_eval_scenes or TrainConfig.final_eval_scenes
    if run_eval(model, Path(args.run), n_scenes, filename) is None:
        raise UserError(f"{args.run} holds a {model.run.train.objective} model, which has "
                        "no evaluation; try seemore generate")


def cmd_caption(args) -> None:
    model = _load_vlm(args)
    if bool(args.images) == bool(args.data):
        raise UserError("give image files or --data SOURCE, one of the two")
    for image in args.images:
        print(f"{image}: {model.caption(image, **_sampling(args))}")
    for where, e in _test_examples(model, args, lambda e: e.caption):
        print(f"{where}: {model.caption(e.image, **_sampling(args))}  (truth: {e.caption})")


def cmd_ask(args) -> None:
    model = _load_vlm(args)
    if args.data and (args.image or args.question):
        raise UserError("give an image and a question, or --data SOURCE, not both")
    if not args.data:
        if not (args.image and args.question):
            raise UserError("give an image file and a question (or --data SOURCE)")
        print(model.ask(args.image, args.question, **_sampling(args)))
    for where, e in _test_examples(model, args, lambda e: e.questions):
        for _, question, truth in e.questions:
            answer = model.ask(e.image, question, **_sampling(args))
            print(f"{where}: {question} -> {answer}  (truth: {truth})")


def cmd_plot(args) -> None:
    from seemore.plot import plot_run

    print(plot_run(args.run, args.out and _png_path(args.out, "plot")))


def cmd_chat(args) -> None:
    from seemore.serving.repl import chat

    model = _load_vlm(args)
    chat(model, args.image, max_new_tokens=args.max_new_tokens, **_sampling(args))


def cmd_serve(args) -> None:
    import logging

    import uvicorn

    from seemore.serving.app import Limits, create_app

    allow = Path(args.allow_local_files).resolve() if args.allow_local_files else None
    if allow is not None and not allow.is_dir():
        raise UserError(f"--allow-local-files: {allow} is not a folder")
    if args.max_batch < 1 or args.max_queue < 1 or not args.timeout > 0:
        raise UserError("--max-batch and --max-queue must be at least 1, --timeout positive")
    limits = Limits(max_batch=args.max_batch, max_queue=args.max_queue, timeout_s=args.timeout)
    sock = _listening_socket(args.host, args.port)  # all of these before the model loads
    model = _in_a_thread_of_its_own(_load, args)  # see Engine._loop: why not this thread
    name = Path(args.run).resolve().name
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    app = create_app(model, name, objective_of(model.run).answers, limits, allow,
                     compile=args.compile)
    print(f"serving {args.run} as {name!r} on http://{args.host}:{args.port}/v1")
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def _listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the model loads: a port in use is an error at once
    (uvicorn would log it once the model had loaded, and exit with 0)."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be 0 to 65535, got {port}")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as e:
        raise UserError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None


def _new_folder(out: Path, command: str) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an empty folder; {command} writes a new one")


def cmd_import(args) -> None:
    from seemore.pretrained.vlm import import_vlm

    out = Path(args.out)
    _new_folder(out, "import")
    model = import_vlm(args.vision, args.decoder, args.overrides)
    model.save_pretrained(out)
    c = model.config
    print(f"wrote {out}: a {c.vision.image_size} px {c.vision.dim}-wide tower, "
          f"{c.n_visual_tokens} visual tokens into a {c.decoder.dim}-wide decoder of "
          f"{len(model.tokenizer)} tokens, {sum(p.numel() for p in model.parameters()):,} "
          f"parameters; train it with: seemore train --recipe pretrained "
          f"train.init_from={out}")


def cmd_merge_lora(args) -> None:
    from seemore.layers.lora import merge_lora

    out = Path(args.out)
    _new_folder(out, "merge-lora")
    model = _load(args)
    merged = merge_lora(model)
    if not merged:
        raise UserError(f"{args.run} has no LoRA adapters (adapters.safetensors) to merge")
    model.save_pretrained(out)
    print(f"wrote {out}: {merged} adapted layers merged into their weights")


def cmd_export(args) -> None:
    from seemore.layers.lora import merge_lora
    from seemore.pretrained.export import export_decoder
    from seemore.tokenizer import PretrainedTokenizer

    out = Path(args.out)
    _new_folder(out, "export")
    model = _load(args)
    if not hasattr(model, "decoder"):
        raise UserError(f"{args.run} holds a {model.run.train.objective} model, which has "
                        "no decoder")
    merge_lora(model)  # adapters, if any, leave inside the weights
    export_decoder(model.decoder, out)
    loads = f"transformers.AutoModelForCausalLM.from_pretrained({str(out)!r}) loads it"
    if isinstance(model.tokenizer, PretrainedTokenizer):  # the checkpoint's, which goes along
        model.tokenizer.model.save(str(out / "tokenizer.json"))
        print(f"wrote {out}: {loads}, and its tokenizer.json is the checkpoint's")
    else:
        print(f"wrote {out}: {loads}; its token ids are those of "
              f"{Path(args.run) / 'tokenizer.json'}, seemore's own tokenizer, which is not "
              "exported")


def cmd_generate(args) -> None:
    from seemore.pretrained.decoder import complete, is_hf_folder

    if is_hf_folder(args.run):  # a Llama or Qwen2 checkpoint, with its own tokenizer
        print(complete(args.run, args.prompt, args.max_new_tokens, **_sampling(args)))
        return
    model = _load(args)
    if not hasattr(model, "complete"):
        raise UserError(f"{args.run} holds a {model.run.train.objective} model, which has "
                        "no decoder to generate text with")
    print(model.complete(args.prompt, args.max_new_tokens, **_sampling(args)))


def _compile_failed(e: Exception) -> bool:
    """Whether e is torch.compile's backend failing (no C++ compiler, say): a page of
    traceback that says less than its first line."""
    from torch._dynamo.exc import BackendCompilerFailed

    return isinstance(e, BackendCompilerFailed)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, where a command's key=value overrides or files may come both
    before and after its options (argparse alone refuses those after an option)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest:
        commands = next(a for a in parser._actions
                        if isinstance(a, argparse._SubParsersAction)).choices
        try:
            return commands[args.command].parse_intermixed_args(
                argv[argv.index(args.command) + 1:], argparse.Namespace(command=args.command))
        except TypeError:  # a command argparse cannot intermix (`data`, with its own commands)
            pass
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if not _compile_failed(e):
            raise
        print(f"error: torch.compile failed here ({first_line(e)}); run without --compile "
              f"(train.compile=false)", file=sys.stderr)
        return 2
    except Stopped as e:
        print(e, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # whatever read the output has stopped (`seemore caption ... | head`): stop quietly,
        # as a Unix tool killed by SIGPIPE does, and let Python's last flush go nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
