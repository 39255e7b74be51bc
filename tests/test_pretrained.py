"""Pretrained parts from Hugging Face folders: tiny random Llama and Qwen2 decoders and
SigLIP and CLIP vision towers, built and saved with transformers (a test-only dependency;
nothing is downloaded), give the same logits, greedy tokens and features in seemore, and a
folder that cannot be read is one line."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from seemore.errors import UserError
from seemore.generation import generate
from seemore.pretrained.decoder import TextModel, load_decoder
from seemore.pretrained.export import export_decoder
from seemore.pretrained.vision import load_vision

transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
             max_position_embeddings=128)


def save_hf(folder, kind="llama", **settings):
    """A random model of transformers' class for kind, its weights spread out (std 0.1-ish
    instead of 0.02, so that the logits differ clearly between tokens), saved to folder."""
    config_class = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[kind]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config_class(**{**SMALL, **settings}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.02 if "norm" in name else 0.1))
    model.save_pretrained(folder)
    return model.eval()


CASES = {
    "llama, grouped-query attention, untied, rope_theta 5000":
        ("llama", dict(num_attention_heads=6, num_key_value_heads=2, rope_theta=5000.0)),
    "llama, multi-head, tied head":
        ("llama", dict(num_attention_heads=4, tie_word_embeddings=True)),
    "qwen2, q/k/v biases, grouped-query, tied":
        ("qwen2", dict(num_attention_heads=6, num_key_value_heads=3,
                       tie_word_embeddings=True, rms_norm_eps=1e-5)),
    "qwen2, untied, rope_theta 1e6":
        ("qwen2", dict(num_attention_heads=4, num_key_value_heads=1, rope_theta=1e6)),
}


@pytest.mark.parametrize("case", CASES)
def test_logits_and_greedy_tokens_match_transformers(tmp_path, case):
    kind, settings = CASES[case]
    theirs = save_hf(tmp_path, kind, **settings)
    ours = load_decoder(tmp_path).eval()
    assert ours.config.tie_embeddings == settings.get("tie_word_embeddings", False)
    assert (ours.lm_head.weight is ours.embed.weight) == ours.config.tie_embeddings
    ids = torch.randint(0, SMALL["vocab_size"], (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(ids).logits
        logits = ours(ours.embed(ids), torch.arange(40).expand(3, 40))
    assert expected.abs().max() > 1  # logits that tell tokens apart
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)

    prompt = ids[:1, :10]
    with torch.no_grad():
        their_tokens = theirs.generate(prompt, max_new_tokens=30, do_sample=False,
                                       min_new_tokens=30, pad_token_id=0)[0, 10:].tolist()
    our_tokens = [int(t) for t in generate(TextModel(ours), [prompt[0].tolist()], None, 30,
                                           stop_at_eos=False)]
    assert our_tokens == their_tokens


def test_bf16_on_load(tmp_path):
    save_hf(tmp_path, num_attention_heads=4)
    decoder = load_decoder(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in decoder.parameters()} == {torch.bfloat16}


def test_a_sharded_checkpoint(tmp_path):
    theirs = save_hf(tmp_path / "whole", num_attention_heads=4)
    theirs.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    a, b = load_decoder(tmp_path / "whole"), load_decoder(tmp_path / "sharded")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def test_folders_that_cannot_be_read_are_one_line(tmp_path):
    save_hf(tmp_path, num_attention_heads=4)
    weights = tmp_path / "model.safetensors"
    good = weights.read_bytes()
    tensors = load_file(weights)

    def refused(match):
        with pytest.raises(UserError, match=match) as caught:
            load_decoder(tmp_path)
        assert "\n" not in str(caught.value)

    edit_config(tmp_path, model_type="gpt2")
    refused(r"config.json: model_type 'gpt2' is not a decoder seemore reads \(llama, qwen2\)")
    edit_config(tmp_path, model_type="llama", rope_parameters={"rope_type": "llama3",
                                                               "rope_theta": 5e5})
    refused("RoPE scaling 'llama3' is not supported")
    edit_config(tmp_path, rope_parameters={"rope_type": "default", "rope_theta": 1e4},
                intermediate_size=96)
    refused(r"model.safetensors: model.layers.0.mlp.gate_proj.weight \+ "
            r"model.layers.0.mlp.up_proj.weight is \(80, 48\) \+ \(80, 48\), not the "
            r"\(192, 48\) config.json describes")
    edit_config(tmp_path, intermediate_size=80)
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    save_file(tensors, weights)
    refused("the weights have no tensor model.layers.1.self_attn.k_proj.weight")
    weights.write_bytes(good[: len(good) // 2])
    refused("model.safetensors: not a readable safetensors file")
    weights.unlink()
    refused("no model.safetensors or model.safetensors.index.json")
    (tmp_path / "config.json").unlink()
    refused("no config.json")


TOWER = dict(hidden_size=48, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
             image_size=32, patch_size=8)


def save_tower(folder, kind, whole=False):
    """A random SigLIP or CLIP vision tower (or a whole SigLIP/CLIP model holding one),
    saved to folder; returns transformers' vision model."""
    torch.manual_seed(0)
    if whole:
        model_class, config_class = {
            "siglip": (transformers.SiglipModel, transformers.SiglipConfig),
            "clip": (transformers.CLIPModel, transformers.CLIPConfig)}[kind]
        text = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                    num_attention_heads=4, vocab_size=99, bos_token_id=0, eos_token_id=1)
        model = model_class(config_class(vision_config=TOWER, text_config=text))
    else:
        model_class, config_class = {
            "siglip": (transformers.SiglipVisionModel, transformers.SiglipVisionConfig),
            "clip": (transformers.CLIPVisionModel, transformers.CLIPVisionConfig)}[kind]
        model = model_class(config_class(**TOWER))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(folder)
    return (model.vision_model if whole else model).eval()


@pytest.mark.parametrize("kind", ["siglip", "clip"])
@pytest.mark.parametrize("whole", [False, True], ids=["tower", "whole model"])
def test_vision_towers_match_transformers(tmp_path, kind, whole):
    theirs = save_tower(tmp_path, kind, whole)
    if kind == "clip":
        (tmp_path / "preprocessor_config.json").write_text(json.dumps(
            {"image_mean": [0.4, 0.5, 0.6], "image_std": [0.2, 0.3, 0.25]}))
    ours = load_vision(tmp_path).eval()
    assert ours.config.class_token == (kind == "clip")
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(pixel_values=(images - ours.pixel_mean) / ours.pixel_std
                          ).last_hidden_state
        features = ours(images)  # pixels in [0, 1]: the ViT normalises them itself
    torch.testing.assert_close(features, expected, atol=1e-4, rtol=1e-4)
    if kind == "clip":
        assert ours.pixel_mean.flatten().tolist() == pytest.approx([0.4, 0.5, 0.6])


def test_a_tower_without_class_token_feeds_the_projector(tmp_path):
    """SigLIP's features are the patches only: the VLM's projector takes all of them."""
    from seemore.config import apply_overrides, get_preset
    from seemore.objectives import build_model

    config = apply_overrides(get_preset("tiny"), ["model.vision.class_token=false"])
    model = build_model(config)
    features = model.vision(torch.rand(2, 3, 32, 32))
    assert features.shape[1] == config.model.vision.grid_size ** 2
    assert model.projector(features).shape[1] == config.model.n_visual_tokens
    with pytest.raises(UserError, match="projector.tokens=cls needs a class token"):
        apply_overrides(config, ["model.projector.tokens=cls"])


def test_a_tower_that_cannot_be_read_is_one_line(tmp_path):
    save_tower(tmp_path, "siglip")
    edit_config(tmp_path, model_type="dinov2")
    with pytest.raises(UserError, match="model_type 'dinov2' is not a vision tower"):
        load_vision(tmp_path)
    edit_config(tmp_path, model_type="siglip_vision_model", hidden_act="relu")
    with pytest.raises(UserError, match="hidden_act 'relu' is not supported"):
        load_vision(tmp_path)
    edit_config(tmp_path, hidden_act="gelu_pytorch_tanh", patch_size=16)
    with pytest.raises(UserError, match=r"embeddings.patch_embedding.weight is \(48, 3, 8, 8\), "
                                        r"not the \(48, 3, 16, 16\) config.json describes"):
        load_vision(tmp_path)


@pytest.mark.parametrize("bias", ["none", "qkv", "all"])
def test_a_seemore_decoder_exports_to_transformers(tmp_path, bias):
    """A decoder trained here, of the Llama family's shape, leaves as a Hugging Face folder
    that transformers loads with the same logits (qwen2 for q/k/v biases, else llama)."""
    from seemore.config import DecoderConfig
    from seemore.models.decoder import Decoder

    torch.manual_seed(0)
    config = DecoderConfig(vocab_size=61, dim=48, n_layers=2, n_heads=6, n_kv_heads=2,
                           mlp="swiglu", hidden_dim=72, bias=bias, rope_base=500.0,
                           tie_embeddings=bias != "all")
    ours = Decoder(config).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    export_decoder(ours, tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert theirs.config.model_type == ("qwen2" if bias == "qkv" else "llama")
    ids = torch.randint(0, 61, (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ours(ours.embed(ids), torch.arange(30).expand(2, 30))
        torch.testing.assert_close(theirs(ids).logits, expected, atol=1e-4, rtol=1e-4)
    again = load_decoder(tmp_path)  # and back
    for (name, p), q in zip(ours.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_an_imported_decoder_round_trips(tmp_path):
    theirs = save_hf(tmp_path / "in", num_attention_heads=6, num_key_value_heads=3)
    export_decoder(load_decoder(tmp_path / "in"), tmp_path / "out")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = torch.randint(0, SMALL["vocab_size"], (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, theirs(ids).logits, atol=1e-5, rtol=1e-5)


def test_a_decoder_of_another_shape_is_not_exported(tmp_path):
    from seemore.config import DecoderConfig
    from seemore.models.decoder import Decoder

    with pytest.raises(UserError, match="not of the Llama family's shape; exporting it needs "
                                        "decoder.mlp=swiglu$"):
        export_decoder(Decoder(DecoderConfig(vocab_size=10, dim=16, n_heads=2)), tmp_path)
    assert not (tmp_path / "config.json").exists()


@pytest.mark.parametrize("kind", ["siglip", "clip"])
def test_a_tower_at_another_image_size_matches_interpolated_positions(tmp_path, kind):
    """At 48 px instead of the checkpoint's 32, the position embedding is resized bicubically
    in both, as transformers does with interpolate_pos_encoding."""
    theirs = save_tower(tmp_path, kind)
    ours = load_vision(tmp_path).eval()
    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = theirs(pixel_values=(images - ours.pixel_mean) / ours.pixel_std,
                          interpolate_pos_encoding=True).last_hidden_state
        features = ours(images)
    assert features.shape[1] == ours.n_prefix + 36
    torch.testing.assert_close(features, expected, atol=1e-4, rtol=1e-4)


def test_the_export_command(tmp_path, capsys):
    from seemore.cli import main

    run = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--out", str(run), "--no-progress",
                 "train.steps=2", "train.final_eval_scenes=2", "model.decoder.mlp=swiglu",
                 "model.decoder.bias=none"]) == 0
    assert main(["export", str(run), str(tmp_path / "hf")]) == 0
    assert "not exported" in capsys.readouterr().out
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ours = load_decoder(tmp_path / "hf").eval()
    ids = torch.randint(0, ours.config.vocab_size, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits,
                                   ours(ours.embed(ids), torch.arange(12)[None]),
                                   atol=1e-4, rtol=1e-4)
    assert main(["export", str(run), str(tmp_path / "hf")]) == 2  # nothing overwritten
    assert "exists and is not an empty folder" in capsys.readouterr().err
    default = tmp_path / "default"
    assert main(["train", "--preset", "tiny", "--out", str(default), "--no-progress",
                 "train.steps=1", "train.final_eval_scenes=2"]) == 0
    capsys.readouterr()
    assert main(["export", str(default), str(tmp_path / "no")]) == 2
    assert "exporting it needs decoder.mlp=swiglu" in capsys.readouterr().err


def test_generate_continues_text_with_a_checkpoint_and_its_tokenizer(tmp_path, capsys):
    """`seemore generate FOLDER "prompt"` on a Hugging Face folder: the checkpoint's own
    tokenizer.json reads and writes the text, and the words are transformers' greedy ones."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from seemore.cli import main

    theirs = save_hf(tmp_path, num_attention_heads=4)
    words = {f"w{i}": i for i in range(SMALL["vocab_size"])}
    tokenizer = Tokenizer(models.WordLevel(words, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    prompt = "w5 w17 w33 w8"
    ids = torch.tensor([tokenizer.encode(prompt).ids])
    with torch.no_grad():
        out = theirs.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)[0].tolist()
    eos = theirs.config.eos_token_id
    out = out[: out.index(eos, 4)] if eos in out[4:] else out
    assert main(["generate", str(tmp_path), prompt, "--max-new-tokens", "12"]) == 0
    assert capsys.readouterr().out.strip() == tokenizer.decode(out)

    (tmp_path / "tokenizer.json").unlink()
    assert main(["generate", str(tmp_path), prompt]) == 2
    assert "no tokenizer.json" in capsys.readouterr().err
