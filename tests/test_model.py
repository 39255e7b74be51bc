import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import seemore
from seemore.config import DecoderConfig, VisionConfig, apply_overrides, get_preset
from seemore.data.collate import collate
from seemore.device import autocast_dtype
from seemore.layers.attention import (
    Attention,
    matmul_attention,
    single_query_attention,
    uses_matmuls,
)
from seemore.layers.block import Block
from seemore.layers.rope import RotaryEmbedding, apply_rope
from seemore.models.decoder import Decoder
from seemore.models.projector import Projector
from seemore.models.vit import ViT
from seemore.objectives import build_model
from seemore.prompt import IGNORE_INDEX, conversation_sequence


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_vit_returns_every_token_and_adapts_to_new_image_sizes(stem):
    vit = ViT(VisionConfig(image_size=32, patch_size=8, dim=32, n_layers=1, n_heads=2,
                           stem=stem))
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, 1 + 16, 32)
    assert vit(torch.randn(2, 3, 48, 48)).shape == (2, 1 + 36, 32)
    cls_only = vit(torch.randn(2, 3, 32, 32), cls_only=True)
    assert cls_only.shape == (2, 1, 32)


@pytest.mark.parametrize("size", [(32, 32), (40, 27)])
def test_patchify_is_the_patch_convolution(size):
    """The patch embedding as one matmul over flattened patches gives the convolution's
    numbers, in the same order of patches, also where the image is not a whole number of
    patches (the convolution drops the rest)."""
    vit = ViT(VisionConfig(image_size=32, patch_size=8, dim=32, n_layers=1, n_heads=2))
    x = torch.randn(2, 3, *size)
    patches, grid_h, grid_w = vit.patchify(x)
    conv = vit.patch_embed(x)  # (B, dim, H // 8, W // 8)
    assert (grid_h, grid_w) == conv.shape[2:]
    torch.testing.assert_close(patches, conv.flatten(2).transpose(1, 2))


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


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys():
    torch.manual_seed(0)
    attn = Attention(dim=32, n_heads=4, n_kv_heads=2, causal=True, qk_norm=True)
    x = torch.randn(2, 5, 32)
    before = attn(x)
    with torch.no_grad():
        attn.qkv.weight[:48] *= 7.0  # the 4 query heads and 2 key heads of width 8
        attn.qkv.bias[:48] *= 7.0
    torch.testing.assert_close(attn(x), before)
    with torch.no_grad():
        attn.qk_gain[:8] *= 3.0  # the learned gain of the first query head does matter
    assert not torch.allclose(attn(x), before)


def test_grouped_query_attention_equals_full_attention_with_shared_kv_heads():
    torch.manual_seed(0)
    gqa = Attention(dim=32, n_heads=4, n_kv_heads=2, causal=True)
    assert gqa.qkv.out_features == (4 + 2 * 2) * 8
    full = Attention(dim=32, n_heads=4, n_kv_heads=4, causal=True)
    # rows of qkv: 4 query heads, then the key heads, then the value heads, 8 rows each;
    # query heads 0-1 share kv head 0 and heads 2-3 share kv head 1
    def shared(t):  # kv heads' rows (16, ...) -> each repeated for its two query heads
        return t.view(2, 8, -1).repeat_interleave(2, dim=0).reshape(32, *t.shape[1:])

    with torch.no_grad():
        for name in ("weight", "bias"):
            q, k, v = getattr(gqa.qkv, name).split([32, 16, 16])
            getattr(full.qkv, name).copy_(torch.cat([q, shared(k), shared(v)]))
        full.proj.load_state_dict(gqa.proj.state_dict())
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(gqa(x), full(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("queries,causal,masked", [(1, False, True), (7, True, False),
                                                   (7, False, True), (20, True, False)])
def test_attention_as_two_matmuls_equals_sdpa(dtype, queries, causal, masked):
    """The CPU half-precision path (attention.matmul_attention: decode steps, and training
    sequences up to MATMUL_KEYS) gives what scaled_dot_product_attention gives in fp32,
    with grouped-query heads, causal or with a padding mask."""
    torch.manual_seed(0)
    q = torch.randn(3, 6, queries, 8, dtype=dtype)
    k, v = torch.randn(3, 2, 20, 8, dtype=dtype), torch.randn(3, 2, 20, 8, dtype=dtype)
    mask = None
    if masked:
        mask = torch.rand(3, 1, queries, 20) > 0.3
        mask[..., 0] = True
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                              attn_mask=mask, is_causal=causal,
                                              enable_gqa=True)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(matmul_attention(q, k, v, mask, causal).float(), expected,
                               atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_single_query_attention_equals_sdpa(dtype):
    """The compiled decode step's attention (products and sums) gives what
    scaled_dot_product_attention gives, with grouped-query heads and a padding mask."""
    torch.manual_seed(0)
    q = torch.randn(3, 6, 1, 8, dtype=dtype)
    k, v = torch.randn(3, 2, 20, 8, dtype=dtype), torch.randn(3, 2, 20, 8, dtype=dtype)
    mask = torch.rand(3, 1, 1, 20) > 0.3
    mask[..., 0] = True
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                              attn_mask=mask, enable_gqa=True)
    ours = single_query_attention(q, k, v, mask)
    assert ours.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(ours.float(), expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_additive_mask_hides_what_a_boolean_one_hides(dtype):
    """Decode steps pass their mask as 0 / -inf added to the scores (generation.py): every
    attention path gives the same as with the boolean mask."""
    torch.manual_seed(0)
    q = torch.randn(3, 6, 1, 8, dtype=dtype)
    k, v = torch.randn(3, 2, 20, 8, dtype=dtype), torch.randn(3, 2, 20, 8, dtype=dtype)
    mask = torch.rand(3, 1, 1, 20) > 0.3
    mask[..., 0] = True
    additive = torch.zeros(3, 1, 1, 20, dtype=dtype).masked_fill(~mask, float("-inf"))
    for attend in (lambda m: matmul_attention(q, k, v, m, False),
                   lambda m: single_query_attention(q, k, v, m),
                   lambda m: F.scaled_dot_product_attention(q, k, v, attn_mask=m,
                                                            enable_gqa=True)):
        torch.testing.assert_close(attend(additive), attend(mask), atol=0, rtol=0)


def test_attention_as_two_matmuls_trains_in_fp32():
    """With gradients flowing, the matmul path computes in fp32 from bf16 inputs, as the
    math path of scaled_dot_product_attention does: the same output up to its last
    rounding to bf16, and the same gradients to within bf16's rounding."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(4, 4, 30, 16, dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    with sdpa_kernel(SDPBackend.MATH):
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    ours = matmul_attention(q, k, v, None, True)
    assert ours.dtype == torch.bfloat16
    torch.testing.assert_close(ours, expected, atol=0, rtol=0)
    grad = torch.randn_like(ours)
    expected_grads = torch.autograd.grad(expected, (q, k, v), grad)
    ours_grads = torch.autograd.grad(ours, (q, k, v), grad)
    for ours_grad, theirs in zip(ours_grads, expected_grads, strict=True):
        torch.testing.assert_close(ours_grad, theirs, atol=1e-2, rtol=1e-2)


def test_bf16_attention_on_cpu_takes_the_matmul_path_where_it_is_faster():
    def q_k(batch, queries, keys, dtype=torch.bfloat16):
        return torch.zeros(batch, 4, queries, 8, dtype=dtype), torch.zeros(batch, 4, keys, 8)

    assert uses_matmuls(*q_k(16, 34, 34))  # a training sequence
    assert uses_matmuls(*q_k(16, 1, 1000))  # a batched decode step
    assert not uses_matmuls(*q_k(1, 1, 100))  # one row's decode step: SDPA is faster
    assert not uses_matmuls(*q_k(16, 400, 400))  # long: the flash kernel is faster
    assert not uses_matmuls(*q_k(16, 34, 34, torch.float32))


def test_rope_rotates_each_pair_by_position_times_its_frequency():
    head_dim, base = 8, 10000.0
    rope = RotaryEmbedding(head_dim, 16, base)
    x = torch.randn(1, 2, 16, head_dim)  # (B, heads, T, hd)
    positions = torch.arange(16)[None]
    out = apply_rope(x, *rope(positions))
    # reference: pair i is (x[i], x[i + hd/2]) as a complex number, times e^(i t theta_i)
    theta = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    z = torch.complex(x[..., :4].double(), x[..., 4:].double())
    rotated = z * torch.polar(torch.ones(16, 4, dtype=torch.float64),
                              torch.arange(16, dtype=torch.float64)[:, None] * theta)
    torch.testing.assert_close(out, torch.cat([rotated.real, rotated.imag], -1).float())
    # so a query-key product depends only on how far apart the two positions are
    q, k = torch.randn(head_dim), torch.randn(head_dim)
    def score(i, j):  # noqa: E306
        qi = apply_rope(q.view(1, 1, 1, -1), *rope(torch.tensor([[i]])))
        kj = apply_rope(k.view(1, 1, 1, -1), *rope(torch.tensor([[j]])))
        return (qi * kj).sum()
    torch.testing.assert_close(score(3, 1), score(12, 10))
    assert not torch.allclose(score(3, 1), score(3, 2))


def test_vit_position_embedding_is_resized_by_rows_and_columns():
    vit = ViT(VisionConfig(image_size=32, patch_size=8, dim=32, n_layers=1, n_heads=2))
    assert vit.position_embedding(4, 4) is vit.pos_embed  # the trained size: as learned
    with torch.no_grad():
        rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
        vit.pos_embed[0, 1:, 0] = rows.flatten()  # channel 0: the row, 1: the column
        vit.pos_embed[0, 1:, 1] = cols.flatten()
        vit.pos_embed[0, 1:, 2] = 0.5  # channel 2: the same everywhere
    table = vit.position_embedding(6, 3)[0]  # 6 rows of 3 patches
    assert table.shape == (1 + 18, 32)
    torch.testing.assert_close(table[0], vit.pos_embed[0, 0])  # the class token's
    grid = table[1:].view(6, 3, 32)
    torch.testing.assert_close(grid[..., 2], torch.full((6, 3), 0.5))
    assert torch.allclose(grid[:, :1, 0], grid[:, :, 0])  # the row channel is flat along
    assert (grid[1:, 0, 0] > grid[:-1, 0, 0]).all()  # a row and grows down the image
    assert torch.allclose(grid[:1, :, 1], grid[:, :, 1])
    assert (grid[0, 1:, 1] > grid[0, :-1, 1]).all()


def test_pixel_shuffle_folds_each_2x2_block_of_patches_into_one_token():
    config = apply_overrides(get_preset("tiny"), ["model.projector.pixel_shuffle=2"]).model
    projector = Projector(config)
    patches = torch.arange(16.0).view(1, 16, 1).expand(1, 16, 3)  # patch p holds p
    folded = projector.pixel_shuffle(patches)  # (1, 4, 4 * 3): a 2x2 grid of tokens
    assert folded.shape == (1, 4, 12)
    first_channel = folded[0, :, ::3]  # the patch each token holds, in reading order
    assert first_channel.tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13],
                                      [10, 11, 14, 15]]
    assert config.n_visual_tokens == (config.vision.image_size // config.vision.patch_size
                                      // 2) ** 2
    features = torch.randn(2, 1 + (config.vision.image_size // config.vision.patch_size) ** 2,
                           config.vision.dim)
    assert projector(features).shape == (2, config.n_visual_tokens, config.decoder.dim)


def test_block_residual_carries_the_unnormalised_input():
    block = Block(16, 2, 2, 64, "layernorm", causal=False)
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


def _batch(model, pairs, per_row=1):
    """A batch of rows, each a conversation of per_row of the (question, answer) pairs."""
    n = model.config.n_visual_tokens
    rows = [pairs[i:i + per_row] for i in range(0, len(pairs), per_row)]
    items = [(torch.rand(3, 32, 32), conversation_sequence(model.tokenizer, n, row))
             for row in rows]
    return collate(items, model.tokenizer.pad_id)


PAIRS = [("what color is the circle?", "red"), ("how many objects are there?", "3"),
         ("describe the image.", "a small blue square in the center")]


def test_loss_is_taken_on_answer_tokens_only(tiny_model):
    b = _batch(tiny_model, PAIRS[:2])
    targets = b.labels[b.labels != IGNORE_INDEX]
    eos = tiny_model.tokenizer.eos_id
    assert tiny_model.tokenizer.decode(targets.tolist()) == "red3"
    assert (targets == eos).sum() == 2
    # padding never contributes: changing the pad tokens leaves the loss unchanged
    _, loss = tiny_model(b.ids, b.images, b.labels)
    ids2 = b.ids.clone()
    ids2[b.ids == tiny_model.tokenizer.pad_id] = 7
    _, loss2 = tiny_model(ids2, b.images, b.labels)
    torch.testing.assert_close(loss, loss2)


def test_loss_matches_a_direct_computation(tiny_model):
    b = _batch(tiny_model, PAIRS[:1])
    logits, loss = tiny_model(b.ids, b.images, b.labels)
    keep = b.labels[0] != IGNORE_INDEX
    expected = F.cross_entropy(logits[0][keep], b.labels[0][keep])
    torch.testing.assert_close(loss, expected)


def test_a_conversation_has_the_image_once_and_every_answer_as_a_target(tiny_model):
    tok, n = tiny_model.tokenizer, tiny_model.config.n_visual_tokens
    seq = conversation_sequence(tok, n, PAIRS)
    assert seq.ids[: 1 + n] == [tok.bos_id] + [tok.image_id] * n
    assert seq.ids.count(tok.image_id) == n
    targets = [t for t in seq.labels if t != IGNORE_INDEX]
    assert tok.decode(targets) == "".join(a for _, a in PAIRS)
    assert targets.count(tok.eos_id) == len(PAIRS)
    # its first turn is exactly what a user's question makes
    first = tiny_model.prompt_ids(PAIRS[0][0])
    assert seq.ids[: len(first)] == first


def test_the_first_turn_computes_as_if_it_were_alone(tiny_model):
    """Causal attention: the later turns of a conversation cannot change the first."""
    images = torch.rand(1, 3, 32, 32)
    n = tiny_model.config.n_visual_tokens
    whole = collate([(images[0], conversation_sequence(tiny_model.tokenizer, n, PAIRS))],
                    tiny_model.tokenizer.pad_id)
    alone = collate([(images[0], conversation_sequence(tiny_model.tokenizer, n, PAIRS[:1]))],
                    tiny_model.tokenizer.pad_id)
    logits, _ = tiny_model(whole.ids, whole.images)
    logits_alone, _ = tiny_model(alone.ids, alone.images)
    T = alone.ids.shape[1]
    torch.testing.assert_close(logits[:, :T], logits_alone, atol=1e-5, rtol=1e-5)


def test_visual_tokens_are_written_over_the_image_slots(tiny_model):
    b = _batch(tiny_model, PAIRS[:2], per_row=2)
    x = tiny_model.embed(b.ids, b.images)
    slots = b.ids[0] == tiny_model.tokenizer.image_id
    with tiny_model.encoding_precision(b.images.device):
        visual = tiny_model.projector(tiny_model.vision(b.images)).float()
    torch.testing.assert_close(x[0, slots], visual[0])
    torch.testing.assert_close(x[0, ~slots], tiny_model.decoder.embed(b.ids[0, ~slots]))


def test_images_are_encoded_in_the_precision_the_model_trained_in(tiny_model):
    """Outside training's autocast the vision tower and projector run in bf16 where the run
    trained in it and this CPU runs bf16 fast (in fp32 elsewhere); the decoder reads fp32."""
    b = _batch(tiny_model, PAIRS[:2], per_row=2)
    seen = []
    tiny_model.projector.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    fast = autocast_dtype("auto", torch.device("cpu")) or torch.float32
    trained = {}
    for precision, expected in (("auto", fast), ("bf16", fast), ("fp32", torch.float32)):
        train = dataclasses.replace(tiny_model.run.train, precision=precision)
        tiny_model.run = dataclasses.replace(tiny_model.run, train=train)
        x = tiny_model.embed(b.ids, b.images)
        assert seen.pop() == expected and x.dtype == torch.float32
        trained[precision] = x
    torch.testing.assert_close(trained["auto"], trained["fp32"], atol=0.05, rtol=0.05)


def test_tied_and_untied_embeddings_survive_save_and_load(tmp_path):
    for tie in (True, False):
        config = apply_overrides(get_preset("tiny"), [f"model.decoder.tie_embeddings={tie}"])
        model = build_model(config)
        assert (model.decoder.lm_head.weight is model.decoder.embed.weight) == tie
        model.save_pretrained(tmp_path / str(tie))
        loaded = seemore.load(tmp_path / str(tie))
        assert (loaded.decoder.lm_head.weight is loaded.decoder.embed.weight) == tie
        for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(),
                                strict=True):
            assert torch.equal(a, b), name
