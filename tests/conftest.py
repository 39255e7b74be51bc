import pytest
import torch

from seemore.config import apply_overrides, get_preset
from seemore.objectives import build_model
from seemore.train.loop import train


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def lively(model):
    """The model with its decoder's matrices drawn at std 0.5: an untrained model then
    writes tokens that depend on what came before (at the small initial weights it repeats
    one token in every row, which would hide a wrong cache or a wrong row). The embedding
    keeps its scale: tied to the output head, a large one makes the model copy its input."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.decoder.named_parameters():
            if p.dim() >= 2 and name != "embed.weight":
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return model


@pytest.fixture
def tiny_model():
    """An untrained tiny model (fp32, random weights)."""
    return build_model(get_preset("tiny")).eval()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny model trained once for the whole session on the colour question (a few
    seconds): (run folder, model)."""
    out = tmp_path_factory.mktemp("run")
    config = apply_overrides(get_preset("tiny"), ["train.steps=300", "data.tasks=color",
                                                  "train.precision=fp32"])
    model = train(config, out, progress=False)
    return out, model
