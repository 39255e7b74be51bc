"""Low-rank adapters (LoRA, Hu et al. 2021): a frozen linear layer y = W x + b plus a trained
update (alpha / rank) B A x of rank `rank`, so that fine-tuning trains and stores
rank x (in + out) numbers per layer instead of in x out. B starts at zero, so an adapted
model starts as the model itself; merging adds (alpha / rank) B A into W, after which the
layer is a plain linear layer again with the same outputs.

Targets name linear layers of the blocks of a component: "decoder" (all of them),
"decoder.attn.qkv", "decoder.attn.proj", "decoder.mlp.fc", "decoder.mlp.proj", and the same
for "vision".
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from seemore.errors import UserError

ADAPTERS = ("lora_a", "lora_b")


class LoRALinear(nn.Linear):
    """A linear layer's own weight and bias (the same parameters, under the same names)
    with an adapter: lora_a (rank, in) and lora_b (out, rank)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__(base.in_features, base.out_features, bias=False, device="meta")
        self.weight, self.bias = base.weight, base.bias
        w = base.weight
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype,
                                               device=w.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # nn.Linear's own init
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype,
                                               device=w.device))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale

    def merged(self) -> nn.Linear:
        """A plain linear layer with the update added into its weight."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device="meta")
        with torch.no_grad():
            update = (self.lora_b.float() @ self.lora_a.float()) * self.scale
            linear.weight = nn.Parameter((self.weight.float() + update).to(self.weight.dtype),
                                         requires_grad=self.weight.requires_grad)
        linear.bias = self.bias
        return linear


def _targeted(name: str, target: str) -> bool:
    component, _, layer = target.partition(".")
    return name.startswith(f"{component}.blocks.") and (not layer or name.endswith("." + layer))


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def add_lora(model: nn.Module, targets: tuple[str, ...], rank: int, alpha: float) -> int:
    """Give every linear layer of model that a target names an adapter; returns how many.
    A target that names no linear layer is an error (a misspelt target would otherwise
    train nothing there)."""
    chosen = {}
    for target in targets:
        found = {name: m for name, m in model.named_modules()
                 if type(m) is nn.Linear and _targeted(name, target)}
        if not found:
            raise UserError(f"train.lora_targets: {target!r} names no linear layer of this "
                            "model (targets: decoder, vision, or one of their attn.qkv, "
                            "attn.proj, mlp.fc, mlp.proj, e.g. decoder.attn.qkv)")
        chosen.update(found)
    for name, linear in chosen.items():
        _replace(model, name, LoRALinear(linear, rank, alpha))
    return len(chosen)


def merge_lora(model: nn.Module) -> int:
    """Merge every adapter of model into its layer's weight; returns how many."""
    adapted = [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name, layer in adapted:
        _replace(model, name, layer.merged())
    return len(adapted)


def adapters(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' tensors by their names in the model's state dict."""
    return {name: p for name, p in model.named_parameters()
            if name.rpartition(".")[2] in ADAPTERS}


@contextmanager
def without_adapters(model: nn.Module) -> Iterator[None]:
    """The model without its adapters' parameters while inside (its state dict is then the
    one of the model they adapt), with them again after."""
    taken = [(m, {k: m._parameters.pop(k) for k in ADAPTERS})
             for m in model.modules() if isinstance(m, LoRALinear)]
    try:
        yield
    finally:
        for module, params in taken:
            module._parameters.update(params)
