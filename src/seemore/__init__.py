"""seemore: a small, fast, hackable vision-language model written from scratch in PyTorch."""

from seemore.config import PRESETS, Config, get_preset
from seemore.errors import UserError
from seemore.models.vlm import VLM

__version__ = "0.1.0"


def load(path, device: str = "cpu") -> VLM:
    """Load a saved model folder (config.json, model.safetensors, tokenizer.json)."""
    return VLM.from_pretrained(path, device)


__all__ = ["Config", "PRESETS", "UserError", "VLM", "get_preset", "load"]
