import json

import pytest
import torch

from seemore import load
from seemore.cli import main
from seemore.config import get_preset
from seemore.data.datasets import task_names
from seemore.recipes import RECIPES, plan
from seemore.train.loop import learning_rate


def test_stage_overrides_apply_to_their_stage_only(tmp_path):
    stages = plan("llava", get_preset("tiny"), ["clip.train.steps=7", "train.seed=3"],
                  tmp_path)
    assert [s.name for s in stages] == ["text", "clip", "align", "instruct"]
    assert [s.config.train.steps for s in stages][1] == 7
    assert all(s.config.train.seed == 3 for s in stages)
    align = stages[2].config.train
    assert align.init_from == (str(tmp_path / "1-text"),)
    assert align.vision_from == str(tmp_path / "2-clip")
    assert align.freeze == ("vision", "decoder") and stages[2].config.data.tasks == ("caption",)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_every_stage_decays_from_its_peak_rate(recipe, tmp_path):
    """The pretrained recipe's instruct stage set train.lr=2e-5 under the default min_lr of
    1e-4, so its cosine climbed to five times the rate it named."""
    for stage in plan(recipe, get_preset("default"), [], tmp_path):
        t = stage.config.train
        rates = [learning_rate(step, stage.config) for step in range(t.steps)]
        assert max(rates) == pytest.approx(t.lr) and rates[-1] <= rates[t.warmup_steps]


def test_llava_recipe_chains_its_stages_and_keeps_frozen_parts(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--preset", "tiny", "--recipe", "llava", "--out", str(out),
                 "--no-progress", "train.steps=3", "train.eval_every=0",
                 "train.final_eval_scenes=4", "--text", str(_text(tmp_path))])
    assert code == 0, capsys.readouterr().err
    timings = json.loads((out / "recipe.json").read_text())["stages"]
    assert [t["stage"] for t in timings] == ["text", "clip", "align", "instruct"]
    text, clip, align, instruct = (load(out / f"{i}-{n}").state_dict() for i, n in
                                   enumerate(["text", "clip", "align", "instruct"], start=1))
    for name, tensor in clip.items():
        if name.startswith("vision."):  # trained in clip, frozen in align and instruct
            assert torch.equal(align[name], tensor) and torch.equal(instruct[name], tensor)
    for name, tensor in text.items():
        if name.startswith("decoder."):  # trained as a language model, frozen in align
            assert torch.equal(align[name], tensor), name
    assert not torch.equal(instruct["decoder.embed.weight"], text["decoder.embed.weight"])
    assert (out / "4-instruct" / "eval.json").is_file()


def _text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("what color is the circle? red\n" * 50)
    return path


def test_language_model_run_learns_text_and_generates(tmp_path, capsys):
    out = tmp_path / "lm"
    code = main(["train", "--preset", "tiny", "--out", str(out), "--no-progress",
                 "--text", str(_text(tmp_path)), "train.objective=lm", "train.steps=60",
                 "train.precision=fp32"])
    assert code == 0, capsys.readouterr().err
    losses = [json.loads(line)["loss"] for line in open(out / "metrics.jsonl")]
    assert losses[-1] < 0.3 * losses[0]
    capsys.readouterr()
    assert main(["generate", str(out), "what color is", "--max-new-tokens", "20"]) == 0
    assert capsys.readouterr().out.startswith("what color is the circle? red")


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe not utf-8", "not UTF-8"),
    (b"  \n", "empty"),
])
def test_bad_text_file_is_one_line_and_exit_code_2(tmp_path, capsys, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    code = main(["train", "--preset", "tiny", "--out", str(tmp_path / "r"), "--no-progress",
                 "train.objective=lm", f"data.text_file={path}"])
    assert code == 2 and message in capsys.readouterr().err


def test_unified_recipe_draws_with_the_vq_stage(tmp_path):
    vq, unified = plan("unified", get_preset("tiny"), ["unified.train.steps=5"], tmp_path)
    assert (vq.name, vq.config.train.objective) == ("vq", "vq")
    assert unified.config.train.vq_from == str(tmp_path / "1-vq")
    assert "draw" in task_names(unified.config) and "draw" not in task_names(vq.config)
    assert unified.config.train.steps == 5
