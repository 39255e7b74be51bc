import math

import pytest
import torch

from seemore.config import VQConfig, apply_overrides, get_preset
from seemore.errors import UserError
from seemore.evaluation.reconstruction import evaluate_vq
from seemore.models.vq import VQVAE, Quantizer, edge_error, usage
from seemore.objectives import build_model
from seemore.objectives.load import load_folder
from seemore.train.loop import train

TINY_VQ = ["train.objective=vq", "train.batch_size=16"]


def test_quantizer_picks_the_nearest_entry_and_passes_gradients_straight_through():
    q = Quantizer(VQConfig(codebook_size=4, code_dim=2)).eval()
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    z = torch.tensor([[0.9, 0.1], [0.1, 0.2], [4.0, 4.5], [0.2, 0.8]]).T.reshape(1, 2, 2, 2)
    z.requires_grad_(True)
    quantised, codes, commitment = q(z)
    assert codes.tolist() == [[1, 0, 3, 2]]
    assert torch.allclose(quantised[0, :, 0, 0], torch.tensor([1.0, 0.0]))
    quantised.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))  # straight through
    assert commitment.item() > 0


def test_ema_update_moves_used_entries_to_their_outputs_and_restarts_dead_ones():
    q = Quantizer(VQConfig(codebook_size=3, code_dim=2, ema_decay=0.5, restart_below=0.9))
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, -10.0]]))
    q.embed_sum.copy_(q.codebook)
    flat = torch.tensor([[1.0, 1.0], [1.0, 1.0], [9.0, 9.0], [11.0, 11.0]])
    q.update(flat, torch.tensor([0, 0, 1, 1]))
    # entry 0: cluster size 0.5 + 0.5 * 2 = 1.5, sum 0.5 * 0 + 0.5 * 2 = 1 per coordinate
    assert q.cluster_size[0].item() == pytest.approx(1.5)
    assert 0.0 < q.codebook[0, 0].item() < 1.0  # pulled towards the outputs at 1
    # entry 2 was never picked: its moving count fell to 0.5, below 0.9, so it restarts
    # on one of the batch's outputs
    assert any(torch.equal(q.codebook[2], row) for row in flat)
    assert q.cluster_size[2].item() == 1.0


def test_usage_of_uniform_and_single_code_counts():
    assert usage(torch.ones(8))["perplexity"] == pytest.approx(8)
    assert usage(torch.ones(8))["codes_used"] == 1.0
    one = usage(torch.tensor([5.0, 0, 0, 0]))
    assert one["perplexity"] == pytest.approx(1) and one["codes_used"] == 0.25


def test_edge_error_charges_blur_and_ignores_a_uniform_shift():
    sharp = torch.zeros(1, 3, 8, 8)
    sharp[..., 2:6, 2:6] = 1.0  # a square
    assert edge_error(sharp, sharp).item() == 0
    assert edge_error(sharp + 0.3, sharp).item() == pytest.approx(0, abs=1e-12)
    kernel = torch.full((3, 1, 3, 3), 1 / 9)
    blurred = torch.nn.functional.conv2d(sharp, kernel, padding=1, groups=3)
    assert edge_error(blurred, sharp).item() > 0.05


def test_negative_loss_weights_are_refused():
    with pytest.raises(UserError, match="edge_weight"):
        apply_overrides(get_preset("tiny"), ["model.vq.edge_weight=-1"])


def test_encode_decode_shapes_follow_the_stages():
    config = apply_overrides(get_preset("tiny"), TINY_VQ + ["model.vq.channels=8,16"])
    vq = build_model(config).eval()
    assert isinstance(vq, VQVAE)
    images = torch.rand(2, 3, 32, 32)
    codes = vq.encode(images)
    assert codes.shape == (2, 64) and config.model.n_image_codes == 64  # 32 / 4 = 8 a side
    assert vq.decode(codes).shape == (2, 3, 32, 32)
    assert 0 <= vq.decode(codes).min() and vq.decode(codes).max() <= 1


def test_image_size_must_divide_by_the_stages():
    with pytest.raises(UserError, match="multiple of 16"):
        apply_overrides(get_preset("tiny"), ["model.vq.channels=8,8,8,8",
                                             "model.vision.image_size=40"])


def test_vq_learns_to_reconstruct_and_saves_as_its_own_folder(tmp_path):
    config = apply_overrides(get_preset("tiny"), TINY_VQ + ["train.steps=120", "train.lr=2e-3"])
    untrained = evaluate_vq(build_model(config), "val", 64)["val"]
    model = train(config, tmp_path, progress=False)
    trained = evaluate_vq(model, "val", 64)["val"]
    assert trained["psnr"] > untrained["psnr"] + 5, (untrained, trained)
    assert trained["codes_used"] > 0.1  # dead entries restart, so many stay in use
    assert not (tmp_path / "tokenizer.json").exists()
    loaded = load_folder(tmp_path)
    images = torch.rand(3, 3, 32, 32)
    assert torch.equal(loaded.encode(images), model.encode(images))
    last = [line for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
            if '"vq"' in line][-1]
    assert all(k in last for k in ("perplexity", "codes_used", "edges", "commitment"))
    assert math.isfinite(trained["perplexity"])
