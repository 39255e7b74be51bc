"""The mixture-of-experts layer: grouped dispatch against a per-token reference, the
auxiliary losses by hand, routing outside training, generation, and balancing that works."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import lively
from PIL import Image

from seemore.cli import main
from seemore.config import apply_overrides, get_preset
from seemore.generation import generate_text
from seemore.layers.moe import MoE, moe_layers
from seemore.objectives import build_model
from seemore.train.loop import train


def reference_moe(layer: MoE, x: torch.Tensor) -> torch.Tensor:
    """The same layer computed token by token, with the documented capacity rule: an
    expert takes assignments first choices first, then in token order, up to capacity."""
    flat = x.reshape(-1, x.shape[-1])
    _, weights, experts = layer.route(flat)
    capacity = layer.capacity(len(flat))
    taken = [0] * layer.num_experts
    rows = [torch.zeros_like(flat[0]) for _ in flat]
    for j in range(layer.top_k):
        for n in range(len(flat)):
            e = int(experts[n, j])
            if capacity is not None and taken[e] >= capacity:
                continue
            taken[e] += 1
            rows[n] = rows[n] + weights[n, j] * layer.experts[e](flat[n])
    return torch.stack(rows).reshape(x.shape)


@pytest.mark.parametrize("experts, top_k, capacity_factor, training", [
    (4, 1, 0.0, True), (4, 2, 0.0, True), (8, 2, 0.0, True), (8, 3, 0.0, True),
    (4, 2, 0.5, True), (8, 2, 1.0, True), (3, 1, 1.25, True), (8, 2, 1.0, False),
])
def test_grouped_dispatch_equals_the_per_token_reference(experts, top_k, capacity_factor,
                                                         training):
    torch.manual_seed(0)
    layer = MoE(16, 32, experts, top_k, noise=False, capacity_factor=capacity_factor)
    layer.train(training)
    x = torch.randn(3, 7, 16, requires_grad=True)
    out = layer(x)
    grads = torch.autograd.grad(out.square().sum(), [x, *layer.parameters()])
    if capacity_factor and training:  # the setting must drop something to test dropping
        assert layer.stats.dropped > 0
    x_ref = x.detach().clone().requires_grad_(True)
    ref = reference_moe(layer, x_ref)
    ref_grads = torch.autograd.grad(ref.square().sum(), [x_ref, *layer.parameters()],
                                    allow_unused=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, torch.zeros_like(g) if r is None else r,
                                   rtol=0, atol=1e-5)


def test_auxiliary_losses_match_a_hand_computation():
    """Two experts, top-1, gate = identity: the logits are the inputs themselves."""
    layer = MoE(2, 4, 2, 1, noise=False, capacity_factor=0.0)
    with torch.no_grad():
        layer.gate.weight.copy_(torch.eye(2))
    logits = [[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [3.0, 0.0]]  # experts 0, 0, 1, 0
    layer(torch.tensor(logits))

    def softmax(row):
        z = sum(math.exp(v) for v in row)
        return [math.exp(v) / z for v in row]

    probs = [softmax(row) for row in logits]
    f = [3 / 4, 1 / 4]  # fraction of the assignments per expert
    P = [sum(p[i] for p in probs) / 4 for i in range(2)]  # mean router probability
    balance = 2 * (f[0] * P[0] + f[1] * P[1])
    z = sum(math.log(sum(math.exp(v) for v in row)) ** 2 for row in logits) / 4
    assert layer.aux["balance"].item() == pytest.approx(balance, rel=1e-6)
    assert layer.aux["z"].item() == pytest.approx(z, rel=1e-6)
    assert layer.stats.load.tolist() == f


def test_routing_is_deterministic_and_never_drops_outside_training():
    torch.manual_seed(0)
    layer = MoE(16, 32, 8, 2, noise=True, capacity_factor=0.5)
    x = torch.randn(2, 9, 16)
    layer.train()
    assert not torch.equal(layer(x), layer(x))  # router noise in training
    layer(x)
    assert layer.stats.dropped > 0
    layer.eval()
    first = layer(x)
    assert layer.stats.dropped == 0
    torch.testing.assert_close(layer(x), first, rtol=0, atol=0)
    # a one-token step (generation): the original's capacity formula gives 0 here
    one = layer(x[:1, :1])
    assert layer.stats.dropped == 0 and one.abs().sum() > 0
    torch.testing.assert_close(one, first[:1, :1], rtol=0, atol=1e-6)


@pytest.fixture
def moe_model():
    config = apply_overrides(get_preset("tiny"), [
        "model.moe.num_experts=4", "model.moe.capacity_factor=1.0", "model.moe.where=both"])
    return build_model(config).eval()


def test_cached_generation_equals_uncached_with_experts(moe_model):
    lively(moe_model)  # tokens that vary, so that agreeing means something
    assert len(moe_layers(moe_model)) == 4  # two decoder blocks, two ViT blocks
    images = torch.rand(3, 3, 32, 32)
    prompts = [moe_model.prompt_ids(q) for q in
               ("what color is the circle?", "describe the image.", "is there a red circle?")]
    cached = generate_text(moe_model, prompts, images, 20, use_cache=True, stop_at_eos=False)
    uncached = generate_text(moe_model, prompts, images, 20, use_cache=False,
                             stop_at_eos=False)
    assert cached == uncached
    assert len(set("".join(cached))) >= 6 and len(set(cached)) == len(cached)


def _load_cv(out) -> float:
    """Coefficient of variation of the expert load, averaged over the last ten logged steps
    and the layers."""
    records = [json.loads(line) for line in open(out / "metrics.jsonl") if '"moe"' in line]
    cvs = [np.std(layer["load"]) / np.mean(layer["load"])
           for r in records[-10:] for layer in r["moe"].values()]
    return float(np.mean(cvs))


def test_balancing_loss_evens_the_expert_load(tmp_path):
    """Same seed and steps, balancing loss off and on (at a weight high enough to show in
    100 steps; at the default 0.01 it takes about 300)."""
    cv = {}
    for weight in ("0", "1.0"):
        config = apply_overrides(get_preset("tiny"), [
            "model.moe.num_experts=4", "model.moe.noise=false", "train.steps=100",
            "train.log_every=2", f"model.moe.balance_loss_weight={weight}",
            "train.precision=fp32"])
        train(config, tmp_path / weight, progress=False)
        cv[weight] = _load_cv(tmp_path / weight)
    assert cv["1.0"] < 0.6 * cv["0"], cv


def test_training_logs_routing_and_eval_draws_the_heat_map(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--out", str(out), "--no-progress",
                 "model.moe.num_experts=4", "model.moe.every_n_layers=2",
                 "model.moe.capacity_factor=0.5", "train.steps=6", "train.log_every=1",
                 "train.final_eval_scenes=4"]) == 0
    records = [json.loads(line) for line in open(out / "metrics.jsonl") if '"loss"' in line]
    routers = records[-1]["moe"]
    assert list(routers) == ["decoder.blocks.1.mlp"]  # the last of every two blocks
    layer = routers["decoder.blocks.1.mlp"]
    assert len(layer["load"]) == 4 and sum(layer["load"]) == pytest.approx(1, abs=1e-3)
    assert 0 < layer["entropy"] <= math.log(4)
    # each expert takes at most half its fair share, so at least half the assignments drop
    assert layer["dropped"] > 0 and 0.5 <= layer["dropped_fraction"] < 1
    assert "expert load per layer" in capsys.readouterr().out

    (out / "moe_load.png").unlink()
    assert main(["eval", str(out), "--scenes", "4"]) == 0
    load = json.loads((out / "eval.json").read_text())["expert_load"]["layers"]
    assert sum(load["decoder.blocks.1.mlp"]) == pytest.approx(1, abs=1e-5)
    with Image.open(out / "moe_load.png") as image:
        assert image.format == "PNG" and image.width > 100
