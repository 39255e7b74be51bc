"""Training recipes: a named sequence of stages. Each stage is a list of config overrides on
top of the preset, and may start from the model folders of earlier stages; it trains and
writes its own model folder, RUN/<n>-<stage>/.

    end-to-end   the VLM trains on captions and questions at once (the original seemore)
    clip         the ViT and a text encoder learn a joint space by contrastive learning
    llava        1 text:     the decoder alone, as a language model on text
                 2 clip:     the ViT, by contrastive learning on captions
                 3 align:    the projector alone, on captions (ViT from 2, decoder from 1,
                             both frozen)
                 4 instruct: projector and decoder on questions and captions (ViT frozen)
    vq           the VQ-VAE image tokenizer alone (models/vq.py)
    unified      1 vq:       the VQ-VAE image tokenizer
                 2 unified:  one VLM that captions, answers and draws: it learns the image
                             codes of stage 1 after captions (text to image) in the same
                             loop as captions and questions (image to text)
    pretrained   a VLM of pretrained parts (`seemore import`, named by train.init_from):
                 1 align:    the projector alone, on captions (tower and decoder frozen)
                 2 instruct: projector and decoder on questions and captions (tower
                             frozen), at LLaVA's fine-tuning rate

The user's overrides apply to every stage; prefixed with a stage's name they apply to that
stage only: ``clip.train.steps=200``, ``align.train.vision_from=runs/my-clip``. The user's
train.init_from is where the recipe starts: the first stage's (the later ones start from
the earlier ones). When it names a model folder written by `seemore import`, every stage
takes that folder's model config (its shapes are the checkpoints').
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from seemore.config import Config, apply_overrides
from seemore.errors import UserError


@dataclass(frozen=True)
class Stage:
    name: str
    overrides: tuple[str, ...] = ()
    init_from: tuple[str, ...] = ()  # earlier stages whose components this one starts from
    vision_from: str = ""  # an earlier stage whose ViT this one starts from
    vq_from: str = ""  # an earlier stage whose VQ-VAE this one draws with


# the model of the first default preset (patch stem, characters, 16 visual tokens of pixel
# shuffle 2, 8 decoder heads, one task per image, lr 1e-3, cosine schedule), with which the
# clip, llava and unified figures in README were measured; those recipes keep it until
# they are measured on the current one
FIRST_DEFAULT = ("model.vision.stem=patch", "model.tokenizer=char",
                 "model.projector.pixel_shuffle=2", "model.decoder.n_heads=8",
                 "model.decoder.max_seq_len=192", "data.tasks_per_image=1", "train.lr=1e-3",
                 "train.vision_lr=0", "train.schedule=cosine")
CLIP = (*FIRST_DEFAULT, "train.objective=clip", "train.batch_size=128", "train.lr=1e-3")
# the two stages of `unified` train in under 30 minutes on 2 CPU cores. The VQ stage's
# edge loss keeps the corners of small squares, which on pixel MSE alone read as circles,
# and a rate of 4e-3 trains it faster (README, "Text to image", has the measurements)
VQ = ("train.objective=vq", "train.batch_size=32", "train.steps=2400", "train.eval_every=800",
      "train.lr=4e-3", "train.schedule=cosine")
# BPE makes a caption about a fifth as many tokens as characters, so a step costs under
# half as much; drawing is short of steps, so 60% of the batches draw, in batches of 32,
# and the decoder learns at the higher rate that drawing gains from while the ViT and
# projector keep the lower one that answering prefers (README, "Text to image", measures
# each choice). 256 positions leave room for the character tokenizer too
# (unified.model.tokenizer=char), whose longest caption and 64 codes take 199.
UNIFIED = (*FIRST_DEFAULT, "model.tokenizer=bpe", "model.decoder.max_seq_len=256",
           "data.draw_share=0.6", "train.batch_size=32", "train.steps=6000",
           "train.eval_every=2000", "train.lr=3e-3", "train.vision_lr=1e-3")
RECIPES: dict[str, tuple[Stage, ...]] = {
    "end-to-end": (Stage("vlm"),),
    "clip": (Stage("clip", (*CLIP, "train.steps=1000")),),
    # 89,600 samples in all (text windows, pairs, examples), as many as the default preset's
    # end-to-end run, so that the two compare at equal data
    "llava": (
        Stage("text", (*FIRST_DEFAULT, "train.objective=lm", "train.steps=200",
                       "train.lr=2e-3")),
        Stage("clip", (*CLIP, "train.steps=300")),
        Stage("align", (*FIRST_DEFAULT, "data.tasks=caption", "train.freeze=vision,decoder",
                        "train.steps=100", "train.warmup_steps=20"),
              init_from=("text",), vision_from="clip"),
        Stage("instruct", (*FIRST_DEFAULT, "train.freeze=vision", "train.steps=500"),
              init_from=("align",)),
    ),
    # LLaVA-1.5's rates: 1e-3 for the projector alone, 2e-5 once the decoder trains with it,
    # each decaying by cosine, the second to 0 (the default min_lr is above it)
    "pretrained": (
        Stage("align", ("data.tasks=caption", "train.freeze=vision,decoder", "train.steps=300",
                        "train.lr=1e-3", "train.vision_lr=0", "train.schedule=cosine")),
        Stage("instruct", ("train.freeze=vision", "train.steps=600", "train.lr=2e-5",
                           "train.min_lr=0", "train.vision_lr=0", "train.schedule=cosine"),
              init_from=("align",)),
    ),
    "vq": (Stage("vq", VQ),),
    "unified": (Stage("vq", VQ), Stage("unified", UNIFIED, vq_from="vq")),
}


@dataclass(frozen=True)
class PlannedStage:
    name: str
    folder: Path
    config: Config


def plan(recipe: str, preset: Config, overrides: list[str], out: Path) -> list[PlannedStage]:
    """Every stage's name, model folder and config."""
    if recipe not in RECIPES:
        raise UserError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
    stages = RECIPES[recipe]
    names = [s.name for s in stages]
    start = [item for item in overrides if item.startswith("train.init_from=")]
    overrides = [item for item in overrides if item not in start]
    if start and (imported := imported_model(start[-1].partition("=")[2])):
        preset = dataclasses.replace(preset, model=imported.model)
    single = len(stages) == 1
    folders = {s.name: out if single else out / f"{i}-{s.name}"
               for i, s in enumerate(stages, start=1)}
    planned = []
    for stage in stages:
        chain = list(stage.overrides)
        if stage.init_from:
            chain.append("train.init_from=" + ",".join(str(folders[n]) for n in stage.init_from))
        if stage.vision_from:
            chain.append(f"train.vision_from={folders[stage.vision_from]}")
        if stage.vq_from:
            chain.append(f"train.vq_from={folders[stage.vq_from]}")
        if stage is stages[0]:
            chain += start
        for item in overrides:
            prefix, _, rest = item.partition(".")
            if prefix not in names:
                chain.append(item)
            elif prefix == stage.name:
                chain.append(rest)
        planned.append(PlannedStage(stage.name, folders[stage.name],
                                    apply_overrides(preset, chain)))
    return planned


def imported_model(init_from: str) -> Config | None:
    """The config of the first model folder of a train.init_from value, if `seemore import`
    wrote it (its tokenizer is a pretrained decoder's)."""
    path = Path(init_from.split(",")[0]) / "config.json"
    if not path.is_file():
        return None
    try:
        config = Config.load(path)
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"train.init_from: {path} is unreadable ({e})") from None
    return config if config.model.tokenizer == "pretrained" else None
