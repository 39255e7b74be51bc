import json

import pytest

from seemore.config import PRESETS, Config, apply_overrides, get_preset
from seemore.data.datasets import task_names, tasks_per_image
from seemore.errors import UserError


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_through_json(name, tmp_path):
    config = get_preset(name)
    config.save(tmp_path / "config.json")
    assert Config.load(tmp_path / "config.json") == config
    assert json.loads((tmp_path / "config.json").read_text())["format_version"] == 2


def test_classic_preset_has_the_original_dimensions():
    m = get_preset("seemore-classic").model
    assert (m.vision.image_size, m.vision.patch_size, m.vision.dim, m.vision.n_layers) == (
        96, 16, 512, 3)
    assert (m.decoder.dim, m.decoder.n_layers, m.decoder.n_heads) == (128, 8, 8)
    assert m.projector.tokens == "cls" and m.n_visual_tokens == 1


def test_overrides_are_typed_and_return_a_new_config():
    base = get_preset("tiny")
    config = apply_overrides(base, ["model.decoder.dim=96", "train.lr=0.01",
                                    "model.decoder.tie_embeddings=false", "train.betas=0.8,0.9"])
    assert config.model.decoder.dim == 96 and config.train.lr == 0.01
    assert config.model.decoder.tie_embeddings is False and config.train.betas == (0.8, 0.9)
    assert base.model.decoder.dim == 64


def test_tasks_per_image_0_means_every_task_of_the_run():
    default = get_preset("default")
    assert default.data.tasks_per_image == 0 and tasks_per_image(default) == 7
    assert tasks_per_image(apply_overrides(default, ["data.tasks=caption,shape"])) == 2
    assert tasks_per_image(apply_overrides(default, ["data.dataset=digits"])) == 3
    assert get_preset("long").model == default.model
    with pytest.raises(UserError, match="between 1 and 7, or 0 for all of them"):
        task_names(apply_overrides(default, ["data.tasks_per_image=8"]))


@pytest.mark.parametrize("override, message", [
    ("nope.key=1", "unknown config key"),
    ("train.steps=ten", "expected a value of type int"),
    ("train.steps", "not of the form key=value"),
    ("model.decoder.n_heads=5", "divisible"),
    ("train.precision=fp8", "train.precision"),
    ("model.vision.stem=resnet", "vision.stem"),
    ("train.vision_lr=-1e-3", "train.vision_lr positive or 0"),
    ("model.tokenizer=word", "model.tokenizer must be 'char', 'bpe' or 'pretrained'"),
    ("model.bpe_vocab_size=100", "at least 256"),
    ("data.tasks_per_image=-1", "data.tasks_per_image must be >= 1, or 0"),
    ("train.eval_scenes=0", "train.eval_scenes must be >= 1"),
    ("train.final_eval_scenes=-1", r"train.final_eval_scenes must be >= 0 \(0: none\)"),
    ("train.eval_every=-1", r"train.eval_every must be >= 0 \(0: none\)"),
    ("model.decoder.dim=0", "decoder.dim must be >= 1, got 0"),
    ("model.vision.patch_size=0", "vision.patch_size must be >= 1, got 0"),
    ("model.decoder.n_layers=-1", "decoder.n_layers must be >= 0, got -1"),
    ("train.grad_clip=-1", r"train.grad_clip must be >= 0 \(0: no clipping\), got -1"),
    # each of these used to train: warmup and decay of the wrong sign, a rate that climbs,
    # or a ZeroDivisionError at the first log
    ("train.warmup_steps=-5", "train.warmup_steps must be >= 0, got -5"),
    ("train.weight_decay=-1", "train.weight_decay must be >= 0, got -1"),
    ("train.min_lr=-1", "train.min_lr must be >= 0, got -1"),
    ("train.lr=inf", "train.lr must be positive"),
    ("train.betas=0.9,1.5", "train.betas must be two numbers in \\[0, 1\\), such as 0.9,0.98; "
                            "got 0.9,1.5"),
    ("train.betas=0.9", "train.betas must be two numbers"),
    ("train.betas=[0.9,0.98]", "expected float values separated by commas, such as "
                               "train.betas=a,b"),
    ("train.log_every=0", "train.log_every must be >= 1, got 0"),
    # these trained on, to NaN or a network with nothing in it, or failed deep inside
    ("model.clip.text_heads=0", "clip.text_heads must be >= 1, got 0"),
    ("model.decoder.rope_base=0", "decoder.rope_base must be above 1, got 0"),
    ("model.decoder.norm_eps=-1", "decoder.norm_eps must be >= 0"),
    ("model.decoder.mlp_ratio=0.001", r"decoder.mlp_ratio \(0.001\) leaves the MLP no hidden "
                                      "units at decoder.dim 64"),
    ("model.vision.image_mean=0.5,0.5", "must be three numbers each"),
    ("model.vision.image_std=0,0,0", "the standard deviations positive"),
])
def test_bad_overrides_say_what_is_wrong(override, message):
    with pytest.raises(UserError, match=message):
        apply_overrides(get_preset("tiny"), [override])


def test_conv_stem_needs_a_power_of_two_patch():
    with pytest.raises(UserError, match="power-of-two vision.patch_size, got 6"):
        apply_overrides(get_preset("tiny"), ["model.vision.image_size=36",
                                             "model.vision.patch_size=6",
                                             "model.vision.stem=conv"])


def test_unknown_preset():
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        get_preset("huge")


def test_a_version_1_model_is_refused_with_the_reason(tmp_path):
    d = get_preset("tiny").to_dict()
    d["format_version"] = 1
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(UserError, match="question before the image, retrain"):
        Config.load(tmp_path / "config.json")
