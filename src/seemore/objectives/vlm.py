"""The vision-language model (models/vlm.py) trained on its dataset's tasks: captions,
questions and, with a VQ-VAE (train.vq_from), drawings. Evaluated by VQA accuracy and
caption object-F1 on every evaluation split, with and without the image."""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

from seemore.config import Config
from seemore.data.collate import TaskDataset, collate
from seemore.data.datasets import dataset_of, members, missing, task_names, tasks_per_image
from seemore.errors import UserError
from seemore.evaluation.vqa import evaluate, format_table
from seemore.grid import image_grid
from seemore.models.vlm import VLM
from seemore.objectives.base import Objective, with_tokenizer


class VLMObjective(Objective):
    name = "vlm"
    model_class = VLM
    answers = True

    def build(self, config):
        task_names(config)  # checks data.tasks before anything is built
        if config.train.vq_from:
            config = with_image_tokenizer(config)
        return self.model(*with_tokenizer(config))

    def make(self, config, tokenizer):
        return VLM(config.model, tokenizer, config.data.resize)

    def data(self, model, config, split, length):
        d = config.data
        dataset = TaskDataset(dataset_of(config), split, model.tokenizer,
                              config.model.n_visual_tokens, task_names(config),
                              tasks_per_image(config), length=length,
                              group=config.train.batch_size, n_codes=config.model.n_image_codes,
                              draw_share=d.draw_share, uncond_share=d.uncond_share)
        return dataset, partial(collate, pad_id=model.tokenizer.pad_id)

    def validate(self, model, config):
        if missing(dataset_of(config), "val"):
            return None  # the final evaluation says why
        result = evaluate(model, "val", config.train.eval_scenes, with_captions=False)
        return result, f"val VQA accuracy {result['vqa_accuracy']['overall']:.3f}"

    def evaluate(self, model, n_scenes):
        results = {}
        for name, data in members(dataset_of(model.run)).items():  # a mixture's one by one
            for split in data.eval_splits:
                key = f"{name}:{split}" if name else split
                if reason := missing(data, split):
                    results.setdefault("skipped", {})[key] = reason
                else:
                    results[key] = evaluate(model, split, n_scenes, data=data, blind=True)
        return results

    def table(self, results):
        return format_table(results)

    def show(self, model, folder: Path) -> str:
        question = show_samples(model)
        if model.vq is not None:
            prompt = show_drawings(model, folder / "drawings.png")
            return f'seemore draw {folder} "{prompt}" -n 4'
        if question:
            return f'seemore ask {folder} IMAGE "{question}"'
        return f"seemore caption {folder} IMAGE"

    def unused_parameters(self, config):
        # a drawing step leaves the ViT without gradients, and a router leaves experts
        return super().unused_parameters(config) or "draw" in task_names(config)


def with_image_tokenizer(config: Config) -> Config:
    """The config with model.vq taken from the VQ run that train.vq_from names."""
    folder = Path(config.train.vq_from)
    if config.model.tokenizer == "pretrained":
        raise UserError("train.vq_from: a model with a pretrained tokenizer does not draw "
                        "(its image codes would need new embeddings; not supported)")
    if not (folder / "config.json").is_file():
        raise UserError(f"train.vq_from: {folder} is not a run folder (no config.json)")
    theirs = Config.load(folder / "config.json")
    if theirs.train.objective != "vq":
        raise UserError(f"train.vq_from: {folder} holds a {theirs.train.objective} model, "
                        "not a VQ-VAE (train one with --recipe vq)")
    size, their_size = config.model.vision.image_size, theirs.model.vision.image_size
    if size != their_size:
        raise UserError(f"train.vq_from: {folder} tokenizes {their_size}x{their_size} images "
                        f"but this model's are {size}x{size}")
    model = dataclasses.replace(config.model, vq=theirs.model.vq)
    if 2 + model.n_image_codes >= model.decoder.max_seq_len:
        raise UserError(f"model.decoder.max_seq_len ({model.decoder.max_seq_len}) cannot hold "
                        f"a caption and {model.n_image_codes} image codes")
    return dataclasses.replace(config, model=model)


def show_samples(model, n: int = 3) -> str | None:
    """Questions about n held-out test images: the model's answer next to the truth.
    Returns the first question asked (None if they had none)."""
    data = dataset_of(model.run)
    if missing(data, "test"):
        return None  # the evaluation has said why
    asked = []
    for i in range(min(n, data.size("test") or n)):
        example = data.labelled("test", i)
        print(f"\ntest image {i}: {example.caption or '(no caption)'}")
        if example.caption:
            answer = model.caption(example.image)
            print(f"  {'ok' if answer == example.caption else 'XX'} caption: {answer}")
        for _, question, truth in example.questions:
            answer = model.ask(example.image, question)
            mark = "ok" if answer == truth else "XX"
            print(f"  {mark} {question:<42} model: {answer:<14} truth: {truth}")
            asked.append(question)
    return asked[0] if asked else None


def show_drawings(model, path: Path, n: int = 8) -> str:
    """Draw the captions of n held-out test images into a grid at path; returns the first."""
    data = dataset_of(model.run)
    captions = [data.pair("test", i)[1] for i in range(n)]
    image_grid(model.draw_batch(captions, seed=0), captions).save(path)
    print(f"\ndrawings of {n} test captions: {path}")
    return captions[0]
