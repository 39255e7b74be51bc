"""Every benchmark script runs at its smallest setting and ends with one JSON line of its
figures, so that none of them rots. (Their figures come from running them in full; README.)"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seemore.config import apply_overrides, get_preset
from seemore.train.loop import train

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def run_benchmark(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["benchmark"] == script.removeprefix("bench_").removesuffix(".py")
    return figures


@pytest.mark.parametrize("script, args, message", [
    ("bench_train.py", ["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    ("bench_generate.py", ["--batch-sizes", "1,x"],
     "argument --batch-sizes: expected a whole number, got 'x'"),
    ("bench_data.py", ["--photo-gb", "0.1,-1"], "a size must be above 0 GB, got -1"),
    ("bench_train.py", ["--preset", "nope"], "error: unknown preset 'nope'"),
])
def test_a_benchmark_refuses_bad_arguments_in_one_line(script, args, message):
    """Not a traceback, nor a zero samples/s (batch 0) or a division by zero (steps 0)."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_bench_train():
    figures = run_benchmark("bench_train.py", "--preset", "tiny", "--batch-size", "4",
                            "--text-len", "8", "--steps", "1", "--repeats", "1")
    assert figures["samples_per_s"] > 0


def test_bench_train_counts_the_conv_stem():
    sys.path.insert(0, str(BENCHMARKS))
    from bench_train import step_flops

    patch = get_preset("tiny")
    conv = apply_overrides(patch, ["model.vision.stem=conv"])
    # 32 px, patch 8, dim 64: 3x3 convs 3->16 at 16 px, 16->32 at 8, 32->64 at 4, then 1x1
    stem = 9 * (3 * 16 * 256 + 16 * 32 * 64 + 32 * 64 * 16) + 64 * 64 * 16
    assert step_flops(conv, 1, 8) - step_flops(patch, 1, 8) == 6 * (stem - 3 * 64 * 64 * 16)


def test_bench_generate():
    figures = run_benchmark("bench_generate.py", "--preset", "tiny", "--new-tokens", "4",
                            "--batch-sizes", "2", "--repeats", "1", "--modes", "cache,nocache")
    assert figures["tokens_per_s_batch2_cache"] > 0
    # the call split at its first token
    assert figures["first_token_ms_batch2_cache"] > 0
    assert figures["decode_only_tokens_per_s_batch2_cache"] > 0
    assert figures["images_encoded_in"] in ("bf16", "fp32")
    fp32 = run_benchmark("bench_generate.py", "--preset", "tiny", "--new-tokens", "2",
                         "--batch-sizes", "1", "--repeats", "1", "--modes", "cache",
                         "--fp32-images")
    assert fp32["images_encoded_in"] == "fp32"


def test_bench_moe():
    figures = run_benchmark("bench_moe.py", "--steps", "1", "--repeats", "1", "--new-tokens",
                            "4", "--val-examples", "64")
    assert figures["seemoe_val_loss"] > 0


def test_bench_data():
    figures = run_benchmark("bench_data.py", "--images", "12", "--batches", "1",
                            "--repeats", "1", "--photo-gb", "0.005", "--distinct-photos", "2",
                            "--photo-steps", "2", "--photo-format", "jpeg")
    assert figures["slowest_pipeline_over_step"] > 0
    assert figures["csv_0.005gb_rows"] >= 2 and figures["csv_0.005gb_peak_rss_mb"] > 0
    assert figures["photo_format"] == "jpeg"


@pytest.fixture(scope="module")
def drawing_run(tmp_path_factory):
    """A tiny model that draws, barely trained (bench_draw only needs one to run)."""
    vq = tmp_path_factory.mktemp("vq")
    train(apply_overrides(get_preset("tiny"), ["train.objective=vq", "train.steps=2"]), vq,
          progress=False)
    drawer = tmp_path_factory.mktemp("drawer")
    train(apply_overrides(get_preset("tiny"), [f"train.vq_from={vq}", "train.steps=2",
                                               "model.decoder.max_seq_len=256"]), drawer,
          progress=False)
    return drawer


@pytest.mark.parametrize("judge", [False, True])
def test_bench_draw(drawing_run, trained_run, judge):
    args = ["--run", str(drawing_run), "--prompts", "5", "--batch-size", "5",
            "--cell-judge-steps", "1"]
    figures = run_benchmark("bench_draw.py", *args, *(["--judge", str(trained_run[0])]
                                                       if judge else []))
    assert 0 <= figures["cells_generated_fully_faithful"] <= 1
    assert ("generated_fully_faithful" in figures) == judge


def test_bench_pretrained():
    pytest.importorskip("transformers")
    figures = run_benchmark("bench_pretrained.py", "--scale", "tiny", "--new-tokens", "4",
                            "--repeats", "1")
    assert figures["generate_bf16_batch16_seemore_over_transformers"] > 0
    assert figures["import_decoder_seemore_seconds"] > 0 < figures["import_vlm_seemore_seconds"]
    assert (figures["train_step_decoder_lora_trainable"]
            < figures["train_step_decoder_full_trainable"])


def test_bench_serve():
    pytest.importorskip("openai")
    figures = run_benchmark("bench_serve.py", "--preset", "tiny", "--clients", "1,2",
                            "--requests", "6", "--fault-requests", "12", "--max-tokens", "3")
    assert [level["errors"] for level in figures["levels"]] == [0, 0]
    fault = figures["fault_run"]
    assert fault["status_5xx"] == 0 and fault["bad_all_4xx"] and fault["good_all_correct"]


def test_bench_scaling(tmp_path):
    png = tmp_path / "scaling.png"
    figures = run_benchmark("bench_scaling.py", "--batch-sizes", "2", "--widths", "64",
                            "--text-len", "4", "--decode-batches", "1", "--contexts", "8",
                            "--decode-context", "8", "--new-tokens", "3", "--steps", "1",
                            "--repeats", "1", "--png", str(png))
    assert figures["train_batch2_samples_per_s"] > 0
    assert figures["decode_batch1_context8_tokens_per_s"] > 0
    assert png.stat().st_size > 0


def test_profile_step():
    figures = run_benchmark("profile_step.py", "--preset", "tiny", "--batch-size", "2",
                            "--text-len", "4", "--context", "8", "--steps", "1")
    for step in ("train", "decode"):
        assert 0.99 < sum(v for k, v in figures[step].items() if k != "wall_ms") < 1.01
