"""Text-to-image: VQ reconstruction, faithfulness of the drawings, speed.

    seemore train --recipe unified --out runs/unified
    seemore train --out runs/judge data.tasks=color,shape,size,position \\
        model.projector.pixel_shuffle=1 train.steps=8000
    python benchmarks/bench_draw.py --run runs/unified/2-unified --judge runs/judge

Without --judge only the cell judge (below) scores the drawings: the VLM judge takes about
48 minutes to train on 2 CPU cores, the cell judge about 7.

- VQ: PSNR and codebook usage of the run's VQ-VAE on held-out test images.
- Faithfulness: the run draws one image for each of --prompts held-out test captions; a
  separately trained VLM (the judge, trained on real images only) is asked, for every
  object of the caption, "what shape / color / size is the object at <its place>?" and
  "where is the <size color shape>?". A drawing is fully faithful when every object has
  the right shape and colour. The same questions on the real test images give the judge's
  ceiling, on images decoded from uniformly random codes its floor; on the real images
  encoded and decoded by the VQ-VAE, the best any drawing through this tokenizer could
  score. A second judge, a CNN
  that names what each cell holds (cell_judge.py, trained here on real images), scores the
  same images, with a much higher ceiling.
- Speed: seconds per image, batch 1 and batched; the training stages' wall time from the
  recipe's recipe.json when there is one.
"""

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cell_judge import CellJudge, train_cell_judge  # noqa: E402
from common import count, emit, machine, run_main  # noqa: E402

from seemore.config import DRAW_GUIDANCE, DRAW_TEMPERATURE  # noqa: E402
from seemore.data.datasets import dataset_of  # noqa: E402
from seemore.data.images import to_pil, to_tensor  # noqa: E402
from seemore.data.shapes import POSITIONS, ShapesWorld, place_phrase  # noqa: E402
from seemore.evaluation.reconstruction import evaluate_vq  # noqa: E402
from seemore.grid import image_grid  # noqa: E402
from seemore.objectives.load import load_folder  # noqa: E402

ATTRIBUTES = ("shape", "color", "size", "position")


def questions(objects) -> list[tuple[int, str, str, set[str]]]:
    """(object index, attribute, question, right answers) for every object of a scene."""
    out = []
    for k, o in enumerate(objects):
        ref = f"the object {place_phrase(o.position)}"
        same = {p.position for p in objects if (p.size, p.color, p.shape) ==
                (o.size, o.color, o.shape)}
        out += [(k, "shape", f"what shape is {ref}?", {o.shape}),
                (k, "color", f"what color is {ref}?", {o.color}),
                (k, "size", f"what size is {ref}?", {o.size}),
                (k, "position", f"where is the {o.size} {o.color} {o.shape}?", same)]
    return out


def summarize(marks: list[dict[str, list[bool]]]) -> dict:
    """marks: per image, per attribute, right or wrong for each object of the prompt ->
    per-attribute accuracy over all objects, the fraction of images whose every object has
    the right shape and colour (fully faithful) and all four attributes right."""
    return {"fully_faithful": statistics.mean(all(m["shape"]) and all(m["color"])
                                              for m in marks),
            "all_four": statistics.mean(all(all(m[a]) for a in ATTRIBUTES) for m in marks),
            **{a: statistics.mean(x for m in marks for x in m[a]) for a in ATTRIBUTES}}


def vlm_judge(judge_model, images: list, scenes: list, batch: int) -> dict:
    """The VLM judge's answers to questions() about every image."""
    asked = [(i, *q) for i, objects in enumerate(scenes) for q in questions(objects)]
    answers = []
    for s in range(0, len(asked), batch):
        chunk = asked[s:s + batch]
        answers += judge_model.ask_batch([images[i] for i, *_ in chunk],
                                         [q for *_, q, _ in chunk], 16)
    marks = [defaultdict(list) for _ in images]
    for (i, _, attribute, _, truth), answer in zip(asked, answers, strict=True):
        marks[i][attribute].append(answer in truth)
    return summarize(marks)


def cell_judge(judge: CellJudge, images: list, scenes: list) -> dict:
    """The cell judge's reading of the cell of every object of the prompt: shape, colour and
    size as read there; position is right when something was drawn in that cell. Also the
    fraction of images with something drawn in a cell the prompt leaves empty."""
    marks, extra = [], []
    for reading, objects in zip(judge.read(images), scenes, strict=True):
        cells = {POSITIONS.index(o.position): o for o in objects}
        m = defaultdict(list)
        for k, o in cells.items():
            seen = reading[k] or (None, None, None)
            m["shape"].append(seen[0] == o.shape)
            m["color"].append(seen[1] == o.color)
            m["size"].append(seen[2] == o.size)
            m["position"].append(reading[k] is not None)
        marks.append(m)
        extra.append(any(r is not None and k not in cells for k, r in enumerate(reading)))
    return {**summarize(marks), "extra_objects": statistics.mean(extra)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run that draws (--recipe unified)")
    parser.add_argument("--judge", default=None,
                        help="a VLM run trained on real images (left out: cell judge only)")
    parser.add_argument("--prompts", type=count, default=500, help="held-out test captions")
    parser.add_argument("--guidance", type=float, default=DRAW_GUIDANCE)
    parser.add_argument("--temperature", type=float, default=DRAW_TEMPERATURE)
    parser.add_argument("--top-k", type=count, default=None)
    parser.add_argument("--batch-size", type=count, default=50, help="prompts drawn at once")
    parser.add_argument("--grid", default=None, help="write the first 8 drawings here (PNG)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cell-judge-steps", type=count, default=1500,
                        help="training steps of the cell judge (batches of 64 scenes)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = load_folder(args.run, args.device)
    judge_model = load_folder(args.judge, args.device) if args.judge else None
    world = ShapesWorld(model.config.vision.image_size)
    n = args.prompts
    scenes = [world.scene("test", i) for i in range(n)]
    captions = [world.pair("test", i)[1] for i in range(n)]
    objects = [s.objects for s in scenes]
    vq = evaluate_vq(model.vq, "test", n, data=dataset_of(model.run))["test"]

    sampling = {"guidance": args.guidance, "temperature": args.temperature,
                "top_k": args.top_k}
    model.draw_batch(captions[:2], seed=0, **sampling)  # warm-up
    start = time.perf_counter()
    drawings = []
    for s in range(0, n, args.batch_size):
        drawings += model.draw_batch(captions[s:s + args.batch_size], seed=s, **sampling)
    batched_s = (time.perf_counter() - start) / n
    single = []
    for i in range(5):
        start = time.perf_counter()
        model.draw(captions[i], seed=i, **sampling)
        single.append(time.perf_counter() - start)
    if args.grid:
        image_grid(drawings[:8], captions[:8]).save(args.grid)

    N, K = model.config.n_image_codes, model.config.vq.codebook_size
    generator = torch.Generator().manual_seed(0)
    random_codes = torch.randint(K, (n, N), generator=generator).to(model.device)
    floor_images = to_pil(model.vq.decode(random_codes))
    real = torch.stack([to_tensor(s.image) for s in scenes]).to(model.device)
    reconstructed = to_pil(model.vq.decode(model.vq.encode(real)))
    sets = {"generated": drawings, "real (ceiling)": [s.image for s in scenes],
            "VQ reconstructions": reconstructed, "random codes (floor)": floor_images}
    scores = {name: vlm_judge(judge_model, images, objects, 400)
              for name, images in sets.items()} if judge_model else {}
    start = time.perf_counter()
    cells = train_cell_judge(args.cell_judge_steps)
    cell_judge_s = time.perf_counter() - start
    cell_scores = {name: cell_judge(cells, images, objects) for name, images in sets.items()}

    recipe = Path(args.run).parent / "recipe.json"
    stages = json.loads(recipe.read_text())["stages"] if recipe.is_file() else []
    print(f"run {args.run}, judge {args.judge}, {n} held-out test captions, guidance "
          f"{args.guidance}, temperature {args.temperature}, top-k {args.top_k}")
    print(f"VQ on {vq['n_images']} test images: PSNR {vq['psnr']:.2f} dB, "
          f"{vq['codes_used']:.0%} of {K} codes used, perplexity {vq['perplexity']:.0f}")
    tables = [("VLM judge", scores)] if scores else []
    tables.append((f"cell judge (trained in {cell_judge_s:.0f} s)", cell_scores))
    for judge_name, table in tables:
        print(f"{judge_name:<32}{'faithful':>9}{'all four':>9}"
              + "".join(f"{a:>9}" for a in ATTRIBUTES) + ("   extra" if table is cell_scores
                                                          else ""))
        for name, r in table.items():
            print(f"  {name:<30}{r['fully_faithful']:>9.3f}{r['all_four']:>9.3f}"
                  + "".join(f"{r[a]:>9.3f}" for a in ATTRIBUTES)
                  + (f"{r['extra_objects']:>8.3f}" if "extra_objects" in r else ""))
    print(f"seconds per image: {statistics.median(single):.3f} alone (median of 5), "
          f"{batched_s:.4f} in batches of {args.batch_size}")
    for stage in stages:
        print(f"stage {stage['stage']}: {stage['seconds']:.0f} s")
    emit({"benchmark": "draw", "prompts": n, **sampling, "vq_psnr": round(vq["psnr"], 2),
          "vq_codes_used": round(vq["codes_used"], 3), "vq_perplexity": round(vq["perplexity"]),
          **{f"{name.split()[0]}_{k}": round(v, 3) for name, r in scores.items()
             for k, v in r.items()},
          **{f"cells_{name.split()[0]}_{k}": round(v, 3) for name, r in cell_scores.items()
             for k, v in r.items()},
          "seconds_per_image": round(statistics.median(single), 3),
          "seconds_per_image_batched": round(batched_s, 4),
          "stage_seconds": {s["stage"]: s["seconds"] for s in stages},
          "device": args.device, **machine(torch.device(args.device))})


if __name__ == "__main__":
    run_main(main)
