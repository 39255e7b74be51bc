"""The VQ-VAE image tokenizer (models/vq.py) that a VLM draws with, evaluated by how well it
reconstructs held-out images."""

from __future__ import annotations

from seemore.data.datasets import dataset_of
from seemore.data.pairs import CaptionPairs, collate_images
from seemore.evaluation.reconstruction import evaluate_vq, format_vq_table
from seemore.models.vq import VQVAE
from seemore.objectives.base import Objective


class VQObjective(Objective):
    name = "vq"
    model_class = VQVAE
    reads_text = False

    def build(self, config):
        return self.model(config, None)

    def make(self, config, tokenizer):
        return VQVAE(config.model.vq)

    def data(self, model, config, split, length):
        return CaptionPairs(dataset_of(config), split, length), collate_images

    def validate(self, model, config):
        result = evaluate_vq(model, "val", config.train.eval_scenes)["val"]
        return result, (f"val PSNR {result['psnr']:.2f} dB, {result['codes_used']:.0%} of "
                        "the codebook used")

    def evaluate(self, model, n_scenes):
        return evaluate_vq(model, "test", n_scenes)

    def table(self, results):
        return format_vq_table(results)

    def record(self, model):
        return {"vq": model.report()}
