"""Decoders from Hugging Face folders: tiny random Llama and Qwen2 models built and saved
with transformers (a test-only dependency; nothing is downloaded) give the same logits and
the same greedy tokens in seemore, and a folder that cannot be read is one line."""

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from seemore.errors import UserError
from seemore.generation import generate
from seemore.pretrained.decoder import load_decoder

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
    # the decode loop's view of a model: its decoder, embedding and tokenizer ids
    model = SimpleNamespace(decoder=ours, config=SimpleNamespace(decoder=ours.config),
                            tokenizer=SimpleNamespace(pad_id=-1, eos_id=-1),
                            device=torch.device("cpu"), embed=lambda ids, images: ours.embed(ids))
    our_tokens = [int(t) for t in generate(model, [prompt[0].tolist()], None, 30,
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
