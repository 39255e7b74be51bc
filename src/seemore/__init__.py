"""seemore: a small, fast, hackable vision-language model written from scratch in PyTorch."""

from seemore.config import PRESETS, Config, get_preset
from seemore.errors import UserError
from seemore.models.clip import CLIP
from seemore.models.vlm import VLM
from seemore.models.vq import VQVAE
from seemore.objectives.load import load_folder

__version__ = "0.1.0"


def load(path, device: str = "cpu") -> VLM | CLIP | VQVAE:
    """Load a saved model folder (config.json, model.safetensors, tokenizer.json): a VLM
    (one that draws, too, after --recipe unified), a CLIP model for a contrastive run, or
    a VQ-VAE image tokenizer."""
    return load_folder(path, device)


__all__ = ["CLIP", "Config", "PRESETS", "UserError", "VLM", "VQVAE", "get_preset", "load"]
