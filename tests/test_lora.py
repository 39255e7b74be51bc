"""LoRA: adapters train while the weights they adapt stay frozen, are saved on their own,
load back to the same logits, and merge into the weights with the same logits."""

import pytest
import torch
import torch.nn as nn
from safetensors import safe_open

from seemore.cli import main
from seemore.config import apply_overrides, get_preset
from seemore.errors import UserError
from seemore.layers.lora import LoRALinear, add_lora, merge_lora
from seemore.objectives import build_model
from seemore.objectives.load import load_folder

TINY = ["--preset", "tiny", "--no-progress", "train.steps=12", "train.final_eval_scenes=2"]


def logits(model, ids, images):
    with torch.no_grad():
        return model(ids, images)[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny run, and one started from it with rank-4 adapters on the decoder."""
    root = tmp_path_factory.mktemp("lora")
    assert main(["train", "--out", str(root / "base"), *TINY]) == 0
    assert main(["train", "--out", str(root / "lora"), *TINY, f"train.init_from={root / 'base'}",
                 "train.lora=4", "train.lora_alpha=8", "train.lr=1e-2"]) == 0
    return root


def test_adapters_train_and_the_weights_they_adapt_do_not(runs):
    base, adapted = load_folder(runs / "base"), load_folder(runs / "lora")
    layers = [m for m in adapted.decoder.modules() if isinstance(m, LoRALinear)]
    assert len(layers) == 4 * base.config.decoder.n_layers  # qkv, proj, fc, proj per block
    assert all(m.lora_b.abs().max() > 0 for m in layers)  # B started at zero and moved
    for name, p in base.decoder.state_dict().items():
        assert torch.equal(p, adapted.decoder.state_dict()[name]), name
    # the rest of the model trains as usual
    assert not torch.equal(base.projector.mlp.fc.weight, adapted.projector.mlp.fc.weight)

    with safe_open(str(runs / "lora" / "adapters.safetensors"), "pt") as f:
        names = list(f.keys())
    with safe_open(str(runs / "lora" / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora" in k]
    assert len(names) == 2 * len(layers) and all("lora_" in n for n in names)


def test_merged_logits_equal_the_adapted_ones(runs, tmp_path, capsys):
    adapted = load_folder(runs / "lora")
    ids = torch.randint(5, len(adapted.tokenizer), (2, 30))
    ids[:, 1:1 + adapted.config.n_visual_tokens] = adapted.tokenizer.image_id
    images = torch.rand(2, 3, 32, 32)
    expected = logits(adapted, ids, images)
    assert main(["merge-lora", str(runs / "lora"), str(tmp_path / "merged")]) == 0
    layers = 4 * adapted.config.decoder.n_layers
    assert f"{layers} adapted layers merged" in capsys.readouterr().out
    assert not (tmp_path / "merged" / "adapters.safetensors").exists()
    merged = load_folder(tmp_path / "merged")
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    torch.testing.assert_close(logits(merged, ids, images), expected, atol=1e-5, rtol=1e-5)
    base = load_folder(runs / "base")
    assert (logits(base, ids, images) - expected).abs().max() > 1e-3  # the adapters matter

    assert main(["merge-lora", str(tmp_path / "merged"), str(tmp_path / "again")]) == 2
    assert "has no LoRA adapters" in capsys.readouterr().err


def test_lora_trains_fewer_parameters():
    from seemore.train.loop import prepare

    config = apply_overrides(get_preset("tiny"), ["train.lora=4"])
    model = build_model(config)
    total = sum(p.numel() for p in model.decoder.parameters())
    prepare(model, config)
    trainable = sum(p.numel() for p in model.decoder.parameters() if p.requires_grad)
    d, hidden, layers = 64, 4 * 64, 2
    # rank x (in + out) per adapted matrix: qkv (64 -> 192), proj, fc (64 -> 256), proj
    assert trainable == 4 * layers * (d + 3 * d + d + d + d + hidden + hidden + d)
    assert trainable < total / 10
    assert all(p.requires_grad for p in model.projector.parameters())


def test_lora_on_one_layer_of_the_vit():
    from seemore.train.loop import prepare

    config = apply_overrides(get_preset("tiny"), ["train.lora=2",
                                                  "train.lora_targets=vision.attn.qkv"])
    model = build_model(config)
    prepare(model, config)
    adapted = [name for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    assert adapted == [f"vision.blocks.{i}.attn.qkv" for i in range(2)]
    assert [n for n, p in model.vision.named_parameters() if p.requires_grad] == [
        f"blocks.{i}.attn.qkv.lora_{x}" for i in range(2) for x in "ab"]
    assert all(p.requires_grad for p in model.decoder.parameters())


def test_merge_is_exact_for_one_layer():
    torch.manual_seed(0)
    model = nn.Module()
    model.blocks = nn.ModuleList([nn.Module()])
    model.blocks[0].fc = nn.Linear(16, 8)
    wrapper = nn.Module()
    wrapper.decoder = model
    add_lora(wrapper, ("decoder.fc",), 2, 4.0)
    layer = wrapper.decoder.blocks[0].fc
    nn.init.normal_(layer.lora_b)
    x = torch.randn(3, 16)
    expected = layer(x)
    assert merge_lora(wrapper) == 1
    torch.testing.assert_close(wrapper.decoder.blocks[0].fc(x), expected)


def test_lora_settings_that_cannot_work_are_one_line(tmp_path, capsys):
    with pytest.raises(UserError, match="train.lora"):
        apply_overrides(get_preset("tiny"), ["train.lora=-1"])
    assert main(["train", "--out", str(tmp_path / "r"), *TINY, "train.lora=2",
                 "train.lora_targets=decoder.attn.qkvv"]) == 2
    assert "'decoder.attn.qkvv' names no linear layer" in capsys.readouterr().err
