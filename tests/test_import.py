"""A VLM of pretrained parts: a tiny random SigLIP tower and Llama decoder with a byte-level
BPE tokenizer.json, saved with transformers (a test-only dependency; nothing downloaded),
imported with `seemore import`, trained with the staged recipe and used by every command."""

import json

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from seemore.cli import main
from seemore.data.shapes import ShapesWorld
from seemore.errors import UserError
from seemore.models.folder import read_config
from seemore.objectives.load import load_folder
from seemore.pretrained.decoder import load_decoder
from seemore.pretrained.vision import load_vision
from seemore.pretrained.vlm import import_vlm
from seemore.tokenizer import PretrainedTokenizer

transformers = pytest.importorskip("transformers")

TOWER = dict(hidden_size=48, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
             image_size=32, patch_size=8)


def save_tokenizer(folder) -> Tokenizer:
    """Byte-level BPE learned from shapes-world captions, with a checkpoint's own specials
    (<|endoftext|> as bos and eos) and a template that prepends bos, as Llama's has."""
    world = ShapesWorld(32)
    text = [world.pair("train", i)[1] for i in range(200)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(text, trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    return tokenizer


def save_parts(tmp_path, tied=True):
    """A SigLIP tower and a Llama decoder (with its tokenizer) as Hugging Face folders."""
    vision, decoder = tmp_path / "siglip", tmp_path / "llama"
    torch.manual_seed(0)
    transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**TOWER)).save_pretrained(
        vision)
    decoder.mkdir()
    tokenizer = save_tokenizer(decoder)
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.get_vocab_size() + 3, hidden_size=48, intermediate_size=96,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, bos_token_id=0, eos_token_id=0,
        tie_word_embeddings=tied)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(decoder)
    return vision, decoder


def test_import_keeps_both_parts_and_the_checkpoints_tokenizer(tmp_path, capsys):
    vision, decoder = save_parts(tmp_path, tied=False)
    out = tmp_path / "model"
    assert main(["import", "--vision", str(vision), "--decoder", str(decoder), "--out",
                 str(out), "model.projector.pixel_shuffle=2"]) == 0
    assert "4 visual tokens" in capsys.readouterr().out
    model = load_folder(out)
    tokenizer = model.tokenizer
    assert isinstance(tokenizer, PretrainedTokenizer)
    vocab = json.loads((decoder / "config.json").read_text())["vocab_size"]
    assert (tokenizer.image_id, len(tokenizer), tokenizer.bos_id) == (vocab, vocab + 1, 0)
    # text ids are the checkpoint's, without the template's extra tokens
    assert tokenizer.encode("a red circle") == Tokenizer.from_file(
        str(decoder / "tokenizer.json")).encode("a red circle", add_special_tokens=False).ids
    assert tokenizer.decode(tokenizer.encode("a red circle") + [vocab]) == "a red circle"

    images = torch.rand(2, 3, 32, 32)
    ids = torch.randint(0, vocab, (2, 12))
    positions = torch.arange(12).expand(2, 12)
    with torch.no_grad():
        torch.testing.assert_close(model.vision(images), load_vision(vision)(images))
        original = load_decoder(decoder)
        theirs = original(original.embed(ids), positions)
        ours = model.decoder(model.decoder.embed(ids), positions)
    torch.testing.assert_close(ours[..., :vocab], theirs)
    assert ours[..., vocab].abs().max() == 0  # <image> is never written
    assert model.config.vision.class_token is False and model.config.n_visual_tokens == 4


def test_the_pretrained_recipe_and_every_command(tmp_path, capsys):
    vision, decoder = save_parts(tmp_path)
    model = tmp_path / "model"
    assert main(["import", "--vision", str(vision), "--decoder", str(decoder), "--out",
                 str(model)]) == 0
    run = tmp_path / "run"
    assert main(["train", "--recipe", "pretrained", "--out", str(run), "--no-progress",
                 f"train.init_from={model}", "train.batch_size=16", "train.eval_every=0",
                 "train.final_eval_scenes=4", "align.train.steps=4", "instruct.train.steps=30",
                 "instruct.train.lr=3e-3", "train.warmup_steps=2"]) == 0
    start, align, instruct = (load_folder(f) for f in (model, run / "1-align",
                                                       run / "2-instruct"))
    assert read_config(run / "2-instruct").model == read_config(model).model

    def same(a, b, part):
        return all(torch.equal(p, q) for p, q in zip(getattr(a, part).parameters(),
                                                     getattr(b, part).parameters(),
                                                     strict=True))
    assert same(start, align, "vision") and same(start, align, "decoder")
    assert not same(start, align, "projector")
    assert same(align, instruct, "vision") and not same(align, instruct, "decoder")
    losses = [json.loads(line)["loss"] for line in (run / "2-instruct" / "metrics.jsonl")
              .read_text().splitlines() if '"loss"' in line]
    assert losses[-1] < 0.6 * losses[0]  # the imported decoder learns the answers

    image = tmp_path / "scene.png"
    Image.fromarray(ShapesWorld(32).labelled("test", 0).image).save(image)
    final = str(run / "2-instruct")
    capsys.readouterr()
    for command in (["ask", final, str(image), "what shape is it?"], ["caption", final,
                    str(image)], ["eval", final, "--scenes", "4"],
                    ["generate", final, "a red", "--max-new-tokens", "5"],
                    ["attend", final, str(image), "what shape is it?", "-o",
                     str(tmp_path / "attention.png")],
                    ["probe", final, "--scenes", "20", "--held-out", "10"]):
        assert main(command) == 0, command
    out = capsys.readouterr().out
    assert "compositional" in out and "\na red" in out

    # LoRA from the aligned model; the export merges the adapters, and transformers reads
    # the decoder with the checkpoint's tokenizer beside it
    lora, hf = tmp_path / "lora", tmp_path / "hf"
    assert main(["train", "--out", str(lora), "--no-progress", f"train.init_from={run / '1-align'}",
                 "train.lora=4", "train.steps=3", "train.batch_size=8", "train.eval_every=0",
                 "train.final_eval_scenes=2", "train.lr=1e-2"]) == 0
    assert (lora / "adapters.safetensors").is_file()
    assert main(["export", str(lora), str(hf)]) == 0
    assert "its tokenizer.json is the checkpoint's" in capsys.readouterr().out
    adapted = load_folder(lora).decoder
    ids = torch.randint(0, start.tokenizer.vocab_size, (2, 20))
    with torch.no_grad():
        ours = adapted(adapted.embed(ids), torch.arange(20).expand(2, 20))
        theirs = transformers.AutoModelForCausalLM.from_pretrained(hf)(ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
    exported = Tokenizer.from_file(str(hf / "tokenizer.json"))
    assert exported.get_vocab() == start.tokenizer.model.get_vocab()


def test_import_errors_are_one_line(tmp_path, capsys):
    vision, decoder = save_parts(tmp_path)
    args = ["import", "--vision", str(vision), "--decoder", str(decoder), "--out"]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(args + [str(tmp_path / "full")]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    with pytest.raises(UserError, match="model.decoder comes from the checkpoints"):
        import_vlm(vision, decoder, ["model.decoder.dim=64"])
    assert main(args + [str(tmp_path / "m"), "model.projector.pixel_shuffle=3"]) == 2
    assert "pixel_shuffle (3) must divide the patch grid (4)" in capsys.readouterr().err
    (decoder / "tokenizer.json").rename(decoder / "elsewhere.json")
    assert main(args + [str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "no tokenizer.json" in err and err.count("\n") == 1
    assert not (tmp_path / "m").exists()
    (decoder / "elsewhere.json").rename(decoder / "tokenizer.json")
    config = json.loads((decoder / "config.json").read_text())
    (decoder / "config.json").write_text(json.dumps({**config, "eos_token_id": None}))
    assert main(args + [str(tmp_path / "m")]) == 2
    assert "no eos token" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "r"), "model.tokenizer=pretrained"]) == 2
    assert "none is named" in capsys.readouterr().err
