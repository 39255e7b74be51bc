"""Decoders of the Llama family from Hugging Face folders: model_type "llama" (Llama,
SmolLM/SmolLM2, TinyLlama) and "qwen2" (Qwen2, Qwen2.5), as seemore's own Decoder.

The architectures are ours with other settings (config.DecoderConfig): a SwiGLU MLP, biases
on nothing (Llama) or on the query, key and value projections only (Qwen2), RMSNorm with the
checkpoint's epsilon, grouped-query attention, RoPE with the checkpoint's base in the same
"rotate half" layout, a tied or untied head. Weights map one to one, except that q, k and v
become our one fused projection and gate and up our one SwiGLU input matrix.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import torch
from tokenizers import Tokenizer as HFTokenizer

from seemore.config import DecoderConfig
from seemore.errors import UserError
from seemore.generation import generate
from seemore.layers.rope import RotaryEmbedding
from seemore.models.decoder import Decoder
from seemore.pretrained.weights import Weights
from seemore.tokenizer import PretrainedTokenizer

MODEL_TYPES = ("llama", "qwen2")


def read_hf_config(folder: str | Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise UserError(f"{folder}: no config.json (not a Hugging Face model folder)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: unreadable ({e})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: not a JSON object")
    return config


def required(hf: dict, key: str, where: str | Path):
    """hf[key], or a one-line error naming the file that lacks it."""
    if key not in hf:
        raise UserError(f"{where}: no {key!r}")
    return hf[key]


def decoder_config(hf: dict, where: str | Path) -> DecoderConfig:
    """Our DecoderConfig for a Hugging Face decoder's config.json (read from where)."""
    kind = hf.get("model_type")
    if kind not in MODEL_TYPES:
        raise UserError(f"{where}: model_type {kind!r} is not a decoder seemore reads "
                        f"({', '.join(MODEL_TYPES)})")

    def need(key: str):
        return required(hf, key, where)

    dim, heads = need("hidden_size"), need("num_attention_heads")
    if hf.get("head_dim", dim // heads) * heads != dim:
        raise UserError(f"{where}: head_dim {hf['head_dim']} x {heads} heads is not "
                        f"hidden_size {dim}; seemore's heads split the width evenly")
    if hf.get("hidden_act", "silu") != "silu":
        raise UserError(f"{where}: hidden_act {hf['hidden_act']!r}; seemore's SwiGLU uses silu")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise UserError(f"{where}: RoPE scaling {rope.get('rope_type', rope.get('type'))!r} "
                        "is not supported (only plain RoPE with its base)")
    if kind == "qwen2":
        if hf.get("use_sliding_window"):
            raise UserError(f"{where}: sliding-window attention is not supported")
        bias = "qkv"
    else:
        biases = (bool(hf.get("attention_bias")), bool(hf.get("mlp_bias")))
        if biases not in ((False, False), (True, True)):
            raise UserError(f"{where}: attention_bias {biases[0]} with mlp_bias {biases[1]} "
                            "is not supported (both or neither)")
        bias = "all" if biases[0] else "none"
    return DecoderConfig(
        vocab_size=need("vocab_size"), dim=dim, n_layers=need("num_hidden_layers"),
        n_heads=heads, n_kv_heads=hf.get("num_key_value_heads") or heads, mlp="swiglu",
        hidden_dim=need("intermediate_size"), bias=bias, norm="rmsnorm",
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        max_seq_len=hf.get("max_position_embeddings", 2048),
        rope_base=float(hf.get("rope_theta", rope.get("rope_theta", 10000.0))),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)))


def hf_names(config: DecoderConfig) -> dict[str, list[str]]:
    """Our parameter name -> the Hugging Face tensors it is made of (concatenated in order)."""
    names = {"embed.weight": ["model.embed_tokens.weight"], "norm.weight": ["model.norm.weight"],
             "lm_head.weight": ["model.embed_tokens.weight" if config.tie_embeddings
                                else "lm_head.weight"]}
    kinds = ["weight"] + (["bias"] if config.bias == "all" else [])
    for i in range(config.n_layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        names[ours + "norm1.weight"] = [theirs + "input_layernorm.weight"]
        names[ours + "norm2.weight"] = [theirs + "post_attention_layernorm.weight"]
        for kind in ["weight"] + (["bias"] if config.bias != "none" else []):
            names[ours + f"attn.qkv.{kind}"] = [theirs + f"self_attn.{x}_proj.{kind}"
                                                for x in "qkv"]
        for kind in kinds:
            names[ours + f"attn.proj.{kind}"] = [theirs + f"self_attn.o_proj.{kind}"]
            names[ours + f"mlp.fc.{kind}"] = [theirs + f"mlp.{x}_proj.{kind}"
                                              for x in ("gate", "up")]
            names[ours + f"mlp.proj.{kind}"] = [theirs + f"mlp.down_proj.{kind}"]
    return names


def load_decoder(folder: str | Path, dtype: torch.dtype | None = None) -> Decoder:
    """The decoder of a Hugging Face Llama or Qwen2 folder, its weights in dtype (default:
    as stored), on the CPU. The model is built without memory, then takes the tensors read
    from the files: about one copy of the weights in RAM."""
    folder = Path(folder)
    config = decoder_config(read_hf_config(folder), folder / "config.json")
    weights = Weights(folder)
    with torch.device("meta"):
        decoder = Decoder(config)
    weights.load_into(decoder, hf_names(config), dtype)
    if config.tie_embeddings:  # one parameter, as Decoder ties them
        decoder.lm_head.weight = decoder.embed.weight
    # RoPE's tables are derived, not stored: compute them for real
    decoder.rope = RotaryEmbedding(config.dim // config.n_heads, config.max_seq_len,
                                   config.rope_base)
    return decoder


def add_image_token(decoder: Decoder) -> Decoder:
    """The decoder with one more row in its embedding and head, for the <image> id: its
    input embedding is always replaced by a visual token, and its output row is zero, as
    the model has no reason to write it."""
    c = decoder.config
    embed = decoder.embed.weight.detach()
    decoder.embed = torch.nn.Embedding.from_pretrained(
        torch.cat([embed, embed.new_zeros(1, c.dim)]), freeze=False)
    if c.tie_embeddings:
        decoder.lm_head.weight = decoder.embed.weight
    else:
        head = decoder.lm_head.weight.detach()
        decoder.lm_head = torch.nn.Linear(c.dim, c.vocab_size + 1, bias=False)
        decoder.lm_head.weight = torch.nn.Parameter(torch.cat([head, head.new_zeros(1, c.dim)]))
    decoder.config = dataclasses.replace(c, vocab_size=c.vocab_size + 1)
    return decoder


def _token_id(hf: dict, folder: Path, hf_tokenizer: HFTokenizer, name: str) -> int | None:
    """The id of the checkpoint's bos, eos or pad token: config.json's {name}_token_id (the
    first of a list), else tokenizer_config.json's {name}_token looked up; None: neither."""
    value = hf.get(f"{name}_token_id")
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, int):
        return value
    path = folder / "tokenizer_config.json"
    try:
        token = json.loads(path.read_text()).get(f"{name}_token") if path.is_file() else None
    except (OSError, ValueError, AttributeError) as e:
        raise UserError(f"{path}: unreadable ({e})") from None
    if isinstance(token, dict):  # an AddedToken written out
        token = token.get("content")
    return hf_tokenizer.token_to_id(token) if isinstance(token, str) else None


def read_tokenizer_json(folder: Path) -> HFTokenizer:
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{folder}: no tokenizer.json (the checkpoint's own tokenizer reads "
                        "and writes its text)")
    try:
        return HFTokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises plain Exception for a bad file
        raise UserError(f"{path}: unreadable ({e})") from None


def pretrained_tokenizer(folder: str | Path) -> PretrainedTokenizer:
    """The tokenizer of a Hugging Face decoder folder, with <image> after its vocabulary.
    Without a bos token the eos token starts a sequence (Qwen2 has none); without a pad
    token eos pads (hidden by the attention mask and the loss)."""
    folder = Path(folder)
    hf = read_hf_config(folder)
    vocab_size = required(hf, "vocab_size", folder / "config.json")
    model = read_tokenizer_json(folder)
    eos = _token_id(hf, folder, model, "eos")
    if eos is None:
        raise UserError(f"{folder}: no eos token (config.json eos_token_id or "
                        "tokenizer_config.json eos_token): answers could not end")
    bos, pad = _token_id(hf, folder, model, "bos"), _token_id(hf, folder, model, "pad")
    ids = {"bos": bos if bos is not None else eos, "eos": eos,
           "pad": pad if pad is not None else eos}
    for name, i in ids.items():
        if not 0 <= i < vocab_size:
            raise UserError(f"{folder}: the {name} token id {i} is outside the vocabulary "
                            f"of {vocab_size} (config.json vocab_size)")
    if model.get_vocab_size() > vocab_size:
        raise UserError(f"{folder / 'tokenizer.json'}: {model.get_vocab_size()} tokens, more "
                        f"than the {vocab_size} rows of the embedding (config.json "
                        "vocab_size): not this model's tokenizer")
    return PretrainedTokenizer(model, vocab_size, ids["bos"], ids["eos"], ids["pad"])


class TextModel:
    """A decoder alone, as the decode loop (seemore.generation.generate) sees a model: token
    ids in, token ids out; the checkpoint's own tokenizer turns text into ids and back.
    pad_id fills the left of shorter prompts (hidden by the attention mask, so any id
    works); eos_id ends a row (-1: none does)."""

    def __init__(self, decoder: Decoder, eos_id: int = -1, pad_id: int = 0):
        self.decoder = decoder
        self.config = SimpleNamespace(decoder=decoder.config)
        self.tokenizer = SimpleNamespace(pad_id=pad_id, eos_id=eos_id)

    @property
    def device(self) -> torch.device:
        return self.decoder.embed.weight.device

    def embed(self, ids: torch.Tensor, images: None = None) -> torch.Tensor:
        return self.decoder.embed(ids)


def is_hf_folder(folder: str | Path) -> bool:
    """Whether folder holds a Hugging Face model (its config.json names a model_type; a
    seemore model folder's does not)."""
    path = Path(folder) / "config.json"
    try:
        return "model_type" in json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        return False


def complete(folder: str | Path, prompt: str, max_new_tokens: int = 200, **sampling) -> str:
    """The prompt and its continuation by a Hugging Face decoder folder, read and written
    with the folder's own tokenizer.json; decoding stops at the checkpoint's eos token.
    sampling: as seemore.generation.generate (temperature, top_k, top_p, seed, compile)."""
    folder = Path(folder)
    tokenizer = pretrained_tokenizer(folder)
    decoder = load_decoder(folder).eval()
    ids = tokenizer.model.encode(prompt).ids  # with the checkpoint's own template
    if not prompt or not ids:
        raise UserError("the prompt is empty")
    new: list[int] = []
    model = TextModel(decoder, eos_id=tokenizer.eos_id)
    for step in generate(model, [ids], None, max_new_tokens, **sampling):
        if int(step[0]) == model.tokenizer.eos_id:
            break
        new.append(int(step[0]))
    return tokenizer.model.decode(ids + new, skip_special_tokens=True)
