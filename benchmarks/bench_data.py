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
"""

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
from common import emit, machine, median_time, train_step  # noqa: E402
from image_folder import write_csv, write_folder  # noqa: E402

from seemore.config import apply_overrides, get_preset  # noqa: E402
from seemore.data.collate import TaskDataset, collate  # noqa: E402
from seemore.data.datasets import task_names  # noqa: E402
from seemore.data.user import UserDataset  # noqa: E402
from seemore.objectives import build_model  # noqa: E402

BATCH = 64


def loader(data: UserDataset, model, workers: int, batches: int) -> DataLoader:
    config = model.run
    tasks = TaskDataset(data, "train", model.tokenizer, config.model.n_visual_tokens,
                        task_names(config), 1, length=BATCH * batches, group=BATCH)
    return DataLoader(tasks, batch_size=BATCH, num_workers=workers,
                      collate_fn=partial(collate, pad_id=model.tokenizer.pad_id))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=10, help="batches per timing")
    parser.add_argument("--repeats", type=int, default=3, help="timings; the median is kept")
    args = parser.parse_args()
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
    emit({**figures, **machine()})


if __name__ == "__main__":
    main()
