"""Data pipeline speed: training samples/s out of a user's dataset, against the training
step's samples/s, so that one can see whether the pipeline is the bottleneck.

    python benchmarks/bench_data.py [--images 1000]

The dataset is examples/image_folder.py's real images (JPEG photo crops of 60-200 pixels a
side, PNG digit scans), written as the original seemore CSV (base64) and as an image
folder. For each format and 0 or 2 DataLoader workers:

- open: reading every row and decoding every image once (the check before training),
  images/s
- samples/s of batches of 64 ready for the model (image tensor, token sequences, padding),
  with the decoded images cached in memory (what a dataset of up to 20,000 rows does) and
  without (what a larger one does: every image decoded again when drawn)

and the default preset's training step on the same batches, samples/s (bf16 where the
training loop would use it). Medians of --repeats timings.

Then, for each size in --photo-gb, a base64 CSV of full-size photos (1024x1024 images of
random colour fields with noise, as PNGs of 2-3 MB each or, with --photo-format jpeg,
JPEGs of about 0.5 MB, cycling through --distinct-photos of them with a caption per row)
is written and, in a fresh process each: opened (`seemore data check`'s reading and
decoding of every row), then trained on for --photo-steps steps of
the default preset. Reported: peak RSS, seconds to open (and per GB), seconds to the end
of the first step, and training samples/s, against the same loop on the shapes world.
"""

import argparse
import base64
import io
import json
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
from common import (  # noqa: E402
    count,
    emit,
    machine,
    median_time,
    peak_rss_mb,
    run_main,
    train_step,
)
from image_folder import write_csv, write_folder  # noqa: E402

from seemore.config import apply_overrides, get_preset  # noqa: E402
from seemore.data.collate import TaskDataset, collate  # noqa: E402
from seemore.data.datasets import dataset_of, task_names, tasks_per_image  # noqa: E402
from seemore.data.user import UserDataset  # noqa: E402
from seemore.objectives import build_model  # noqa: E402

BATCH = 64


def gigabytes(text: str) -> list[float]:
    """argparse type of --photo-gb: comma-separated sizes in GB, each above 0 (empty: none)."""
    sizes = []
    for part in filter(None, text.split(",")):
        try:
            size = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of GB, got {part!r}") from None
        if not size > 0:
            raise argparse.ArgumentTypeError(f"a size must be above 0 GB, got {part}")
        sizes.append(size)
    return sizes


def loader(data: UserDataset, model, workers: int, batches: int) -> DataLoader:
    config = model.run
    tasks = TaskDataset(data, "train", model.tokenizer, config.model.n_visual_tokens,
                        task_names(config), 1, length=BATCH * batches, group=BATCH)
    return DataLoader(tasks, batch_size=BATCH, num_workers=workers,
                      collate_fn=partial(collate, pad_id=model.tokenizer.pad_id))


def photo_csv(path: Path, gigabytes: float, distinct: int, fmt: str) -> int:
    """A base64 CSV of about `gigabytes` of 1024x1024 photos in fmt (PNG or JPEG); returns
    its rows."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:1024, 0:1024] / 1024
    photos = []
    for _ in range(distinct):
        a, b, c = rng.uniform(0, 255, 3)
        field = np.stack([a + (b - a) * x, b + (c - b) * y, c + (a - c) * x * y], -1)
        pixels = (field + rng.normal(0, 25, field.shape)).clip(0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
        photos.append(base64.b64encode(buffer.getvalue()).decode())
    rows, written = 0, 0
    with open(path, "w") as f:
        f.write("b64string_images,caption\n")
        while written < gigabytes * 1e9:
            line = f"{photos[rows % distinct]},photo number {rows}\n"
            f.write(line)
            rows, written = rows + 1, written + len(line)
    return rows


def measure(dataset: str, steps: int) -> dict:
    """Open a dataset and train the default preset on it for `steps` steps (one process)."""
    start = time.perf_counter()
    config = apply_overrides(get_preset("default"), [f"data.dataset={dataset}"])
    data = dataset_of(config)  # what training opens, once (the tokenizer reads it too)
    opened = time.perf_counter() - start
    torch.manual_seed(0)
    model = build_model(config).train()
    tasks = TaskDataset(data, "train", model.tokenizer,
                        config.model.n_visual_tokens, task_names(config),
                        tasks_per_image(config), length=BATCH * steps, group=BATCH)
    batches = iter(DataLoader(tasks, batch_size=BATCH,
                              collate_fn=partial(collate, pad_id=model.tokenizer.pad_id)))
    step = train_step(model, "auto")

    def one_step():
        batch = next(batches)
        step(batch.ids, batch.images, batch.labels)

    one_step()
    first = time.perf_counter() - start
    tick = time.perf_counter()
    for _ in range(steps - 1):
        one_step()
    rate = BATCH * (steps - 1) / (time.perf_counter() - tick)
    return {"open_s": round(opened, 2), "first_step_s": round(first, 2),
            "samples_per_s": round(rate, 1),
            "peak_rss_mb": round(peak_rss_mb())}


def in_a_process(dataset: str, steps: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--measure", dataset,
                           "--photo-steps", str(steps)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def large_csvs(sizes: list[float], distinct: int, steps: int, fmt: str, tmp: Path) -> dict:
    figures = {}
    shapes = in_a_process("shapes", steps)
    figures["shapes_samples_per_s"] = shapes["samples_per_s"]
    print(f"shapes world: {shapes['samples_per_s']:.0f} samples/s, peak RSS "
          f"{shapes['peak_rss_mb']} MB")
    for gb in sizes:
        path = tmp / f"photos-{gb}gb.csv"
        rows = photo_csv(path, gb, distinct, fmt)
        result = in_a_process(str(path), steps)
        path.unlink()
        name = f"csv_{gb}gb"
        figures.update({f"{name}_{k}": v for k, v in result.items()})
        figures[f"{name}_rows"] = rows
        figures[f"{name}_open_s_per_gb"] = round(result["open_s"] / gb, 1)
        print(f"base64 CSV of {gb} GB ({rows} {fmt} photos): peak RSS {result['peak_rss_mb']} MB, "
              f"open {result['open_s']:.1f} s ({result['open_s'] / gb:.0f} s per GB), "
              f"first step done at {result['first_step_s']:.1f} s, "
              f"{result['samples_per_s']:.0f} samples/s")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=count, default=1000)
    parser.add_argument("--batches", type=count, default=10, help="batches per timing")
    parser.add_argument("--repeats", type=count, default=3, help="timings; the median is kept")
    parser.add_argument("--photo-gb", type=gigabytes, default=[0.1, 1.0, 5.0],
                        help="sizes of the base64 photo CSVs, in GB (empty: none)")
    parser.add_argument("--distinct-photos", type=count, default=50)
    parser.add_argument("--photo-format", choices=["png", "jpeg"], default="png")
    parser.add_argument("--photo-steps", type=count, default=10,
                        help="training steps on each photo CSV")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # one dataset, in this process
    args = parser.parse_args()
    if args.measure:
        emit(measure(args.measure, args.photo_steps))
        return
    figures = {"benchmark": "data", "images": args.images, "batch_size": BATCH}

    with tempfile.TemporaryDirectory() as tmp:
        sources = {"csv": write_csv(Path(tmp) / "data.csv", args.images),
                   "folder": write_folder(Path(tmp) / "folder", args.images)}
        config = apply_overrides(get_preset("default"), [f"data.dataset={sources['folder']}"])
        torch.manual_seed(0)
        model = build_model(config).train()
        size = config.model.vision.image_size

        step = train_step(model, "auto")
        batch = next(iter(loader(UserDataset(sources["folder"], size), model, 0, 1)))

        def run_steps():
            for _ in range(3):
                step(batch.ids, batch.images, batch.labels)

        run_steps()
        step_rate = 3 * BATCH / median_time(run_steps, args.repeats)[0]
        figures["train_step_samples_per_s"] = round(step_rate, 1)
        print(f"default preset training step: {step_rate:.0f} samples/s "
              f"(batch {BATCH}, {batch.ids.shape[1]} tokens)")

        slowest = float("inf")
        for name, path in sources.items():
            for workers in (0, 2):
                start = time.perf_counter()
                data = UserDataset(path, size, num_workers=workers)
                rows = len(data.records)
                open_rate = rows / (time.perf_counter() - start)
                figures[f"{name}_open_images_per_s_workers{workers}"] = round(open_rate, 1)
                line = f"{name:>6}, {workers} workers: open {open_rate:6.0f} images/s"
                for cached in (True, False):
                    if not cached:
                        data.images = None  # decode again when drawn, as a large dataset does
                    batches = loader(data, model, workers, args.batches)
                    seconds = median_time(lambda batches=batches: list(batches), args.repeats)[0]
                    rate = BATCH * args.batches / seconds
                    slowest = min(slowest, rate)
                    key = f"{name}_{'cached' if cached else 'decoded'}_workers{workers}"
                    figures[f"{key}_samples_per_s"] = round(rate, 1)
                    line += (f", {'cached' if cached else 'decoded'} {rate:6.0f} samples/s "
                             f"({rate / step_rate:.1f}x the step)")
                print(line)
        figures["slowest_pipeline_over_step"] = round(slowest / step_rate, 2)
        print(f"slowest pipeline: {slowest / step_rate:.1f}x the training step")
        figures["photo_format"] = args.photo_format
        figures.update(large_csvs(args.photo_gb, args.distinct_photos, args.photo_steps,
                                  args.photo_format.upper(), Path(tmp)))
    emit({**figures, **machine()})


if __name__ == "__main__":
    run_main(main)
