import pytest
import torch

from seemore.config import apply_overrides, get_preset
from seemore.objectives import build_model
from seemore.train.loop import train


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


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
