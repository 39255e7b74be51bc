"""`seemore plot RUN`: the training curves of a run, from its metrics.jsonl, as a PNG.

Left: training loss by step (and the learning rate, on its own axis). Right: what the
periodic evaluations measured on val against the training samples seen: VQA accuracy for a
VLM, overall and per question type, image->text recall@5 for a CLIP run; absent when the
run did not evaluate.
"""

from __future__ import annotations

import json
from pathlib import Path

from seemore.errors import UserError


def read_metrics(run: Path) -> tuple[list[dict], list[dict]]:
    """(the logged training steps, the periodic evaluations) of a run."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run}: no metrics.jsonl (is it a run folder?)")
    steps, evals = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path}:{number}: not a JSON line") from None
        if "loss" in record:
            steps.append(record)
        elif "val" in record:
            evals.append(record)
    if not steps:
        raise UserError(f"{path}: no training steps logged yet")
    return steps, evals


def per_type(result: dict) -> dict[str, float]:
    """A VLM evaluation's accuracy per question type (empty for other objectives)."""
    return {k: v for k, v in result.get("vqa_accuracy", {}).items() if k != "overall"}


def val_score(result: dict) -> tuple[str, float] | None:
    if "vqa_accuracy" in result:
        return "val VQA accuracy", result["vqa_accuracy"]["overall"]
    if "image_to_text" in result:
        return "val image->text recall@5", result["image_to_text"]["recall@5"]
    return None


def plot_run(run: str | Path, out: str | Path | None = None) -> Path:
    """Draw the run's curves into out (default RUN/curves.png); returns the path."""
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend stays as it is

    run = Path(run)
    steps, evals = read_metrics(run)
    scores = [(e["step"], val_score(e["val"])) for e in evals]
    scores = [(step, score) for step, score in scores if score is not None]
    fig = Figure(figsize=(11 if scores else 6, 4))
    axes = fig.subplots(1, 2 if scores else 1, squeeze=False)
    ax = axes[0][0]
    ax.plot([s["step"] for s in steps], [s["loss"] for s in steps], color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss", color="tab:blue")
    ax.set_yscale("log")
    lr = ax.twinx()
    lr.plot([s["step"] for s in steps], [s["lr"] for s in steps], color="tab:gray", lw=0.8)
    lr.set_ylabel("learning rate", color="tab:gray")
    if scores:
        ax = axes[0][1]
        batch = json.loads((run / "config.json").read_text())["train"]["batch_size"]
        seen = [step * batch for step, _ in scores]
        ax.plot(seen, [score for _, (_, score) in scores], "o-", color="black", lw=2,
                label="overall")
        types = per_type(evals[0]["val"])
        for name in types:
            ax.plot(seen, [per_type(e["val"])[name] for e in evals], lw=1, label=name)
        if types:
            ax.legend(fontsize=8, loc="lower right")
        ax.set_xlabel("training samples seen")
        ax.set_ylabel(scores[0][1][0])
        ax.set_ylim(0, 1)
    fig.suptitle(run.name)
    fig.tight_layout()
    out = Path(out) if out else run / "curves.png"
    fig.savefig(out, dpi=110)
    return out
