import math

import torch
import torch.nn.functional as F

from seemore.config import DecoderConfig, VisionConfig, apply_overrides, get_preset
from seemore.data.collate import IGNORE_INDEX, collate, training_sequence
from seemore.layers.attention import Attention
from seemore.layers.block import Block
from seemore.models.decoder import Decoder
from seemore.models.vit import ViT
from seemore.models.vlm import VLM
from seemore.train.loop import build_model


def test_vit_returns_every_token_and_adapts_to_new_image_sizes():
    vit = ViT(VisionConfig(image_size=32, patch_size=8, dim=32, n_layers=1, n_heads=2))
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, 1 + 16, 32)
    assert vit(torch.randn(2, 3, 48, 48)).shape == (2, 1 + 36, 32)
    cls_only = vit(torch.randn(2, 3, 32, 32), cls_only=True)
    assert cls_only.shape == (2, 1, 32)


def test_cls_only_shortcut_matches_the_full_forward():
    vit = ViT(VisionConfig(image_size=32, patch_size=8, dim=32, n_layers=2, n_heads=2))
    images = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(vit(images, cls_only=True), vit(images)[:, :1])


def test_attention_scales_by_head_width_not_model_width():
    attn = Attention(dim=32, n_heads=4, n_kv_heads=4, causal=True)
    x = torch.randn(2, 5, 32)
    q, k, v = attn.qkv(x).split(32, dim=-1)
    q, k, v = (t.view(2, 5, 4, 8).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(8)  # head width 8, not 32
    scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 5, 32)
    torch.testing.assert_close(attn(x), attn.proj(y))


def test_grouped_query_attention_runs_with_fewer_kv_heads():
    attn = Attention(dim=32, n_heads=4, n_kv_heads=2, causal=True)
    assert attn.qkv.out_features == (4 + 2 * 2) * 8
    assert attn(torch.randn(2, 5, 32)).shape == (2, 5, 32)


def test_block_residual_carries_the_unnormalised_input():
    block = Block(16, 2, 2, 4.0, "layernorm", causal=False)
    for p in (block.attn.proj.weight, block.attn.proj.bias, block.mlp.proj.weight,
              block.mlp.proj.bias):
        torch.nn.init.zeros_(p)
    x = torch.randn(2, 3, 16) * 5 + 3
    torch.testing.assert_close(block(x), x)


def test_decoder_is_causal():
    dec = Decoder(DecoderConfig(vocab_size=20, dim=32, n_layers=2, n_heads=4, max_seq_len=16))
    x = torch.randn(1, 6, 32)
    pos = torch.arange(6)[None]
    full = dec(x, pos)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(1, 2, 32)
    torch.testing.assert_close(dec(x2, pos)[:, :4], full[:, :4])


def _batch(model, pairs):
    n = model.config.model.n_visual_tokens
    items = [(torch.randn(3, 32, 32), *training_sequence(model.tokenizer, n, q, a))
             for q, a in pairs]
    return collate(items, model.tokenizer.pad_id)


def test_loss_is_taken_on_answer_tokens_only(tiny_model):
    images, ids, labels = _batch(tiny_model, [("what color is the circle?", "red"),
                                              ("how many objects are there?", "3")])
    targets = labels[labels != IGNORE_INDEX]
    eos = tiny_model.tokenizer.eos_id
    assert tiny_model.tokenizer.decode(targets.tolist()) == "red3"
    assert (targets == eos).sum() == 2
    # padding never contributes: changing the pad tokens leaves the loss unchanged
    _, loss = tiny_model(ids, images, labels)
    ids2 = ids.clone()
    ids2[ids == tiny_model.tokenizer.pad_id] = 7
    _, loss2 = tiny_model(ids2, images, labels)
    torch.testing.assert_close(loss, loss2)


def test_loss_matches_a_direct_computation(tiny_model):
    images, ids, labels = _batch(tiny_model, [("what shape is the red object?", "square")])
    logits, loss = tiny_model(ids, images, labels)
    keep = labels[0] != IGNORE_INDEX
    expected = F.cross_entropy(logits[0][keep], labels[0][keep])
    torch.testing.assert_close(loss, expected)


def test_visual_tokens_are_spliced_at_the_image_slots(tiny_model):
    images, ids, _ = _batch(tiny_model, [("what color is the circle?", "red")])
    x = tiny_model.embed(ids, images)
    slots = ids[0] == tiny_model.tokenizer.image_id
    visual = tiny_model.projector(tiny_model.vision(images))
    torch.testing.assert_close(x[0, slots], visual[0])
    torch.testing.assert_close(x[0, ~slots], tiny_model.decoder.embed(ids[0, ~slots]))


def test_tied_and_untied_embeddings_survive_save_and_load(tmp_path):
    for tie in (True, False):
        config = apply_overrides(get_preset("tiny"), [f"model.decoder.tie_embeddings={tie}"])
        model = build_model(config)
        assert (model.decoder.lm_head.weight is model.decoder.embed.weight) == tie
        model.save_pretrained(tmp_path / str(tie))
        loaded = VLM.from_pretrained(tmp_path / str(tie))
        assert (loaded.decoder.lm_head.weight is loaded.decoder.embed.weight) == tie
        for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(),
                                strict=True):
            assert torch.equal(a, b), name
