"""The tensors of a Hugging Face model folder, read lazily from its safetensors files.

A folder holds model.safetensors, or shards listed in model.safetensors.index.json
("weight_map": tensor name -> file). Files are memory-mapped and a tensor is read only when
asked for, so importing a checkpoint needs about its size in memory once, not twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open

from seemore.errors import UserError

SINGLE, INDEX = "model.safetensors", "model.safetensors.index.json"


class Weights:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        single, index = self.folder / SINGLE, self.folder / INDEX
        if single.is_file():
            files = {single: None}
        elif index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise UserError(f"{index}: unreadable index ({e})") from None
            files = {self.folder / name: None for name in dict.fromkeys(weight_map.values())}
        else:
            raise UserError(f"{self.folder}: no {SINGLE} or {INDEX}")
        self.file_of: dict[str, Path] = {}
        self.handles = {}
        for path in files:
            try:
                handle = safe_open(str(path), "pt")
            except Exception as e:  # safetensors raises several types for a bad file
                raise UserError(f"{path}: not a readable safetensors file ({e})") from None
            self.handles[path] = handle
            for name in handle.keys():
                self.file_of[name] = path

    def __contains__(self, name: str) -> bool:
        return name in self.file_of

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.handles[self._file(name)].get_slice(name).get_shape())

    def get(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The tensor called name (in dtype, if given)."""
        path = self._file(name)
        try:
            tensor = self.handles[path].get_tensor(name)
        except Exception as e:
            raise UserError(f"{path}: cannot read {name} ({e})") from None
        return tensor if dtype is None else tensor.to(dtype)

    def _file(self, name: str) -> Path:
        if name not in self.file_of:
            raise UserError(f"{self.folder}: the weights have no tensor {name}")
        return self.file_of[name]

    def load_into(self, module: nn.Module, names: dict[str, list[str]],
                  dtype: torch.dtype | None = None) -> None:
        """Give module (built on the meta device: no memory yet) its parameters: each of its
        names gets the concatenation of the checkpoint's tensors listed for it, reshaped
        where the two differ only in dimensions of size 1 (a class token stored as (D,))."""
        expected = module.state_dict()
        state = {}
        for ours, theirs in names.items():
            parts = [self.get(name, dtype) for name in theirs]
            tensor = parts[0] if len(parts) == 1 else torch.cat(parts)
            want = expected[ours].shape
            if [d for d in tensor.shape if d != 1] == [d for d in want if d != 1]:
                tensor = tensor.reshape(want)
            if tensor.shape != want:
                shapes = " + ".join(str(tuple(p.shape)) for p in parts)
                raise UserError(f"{self.file_of[theirs[0]]}: {' + '.join(theirs)} is "
                                f"{shapes}, not the {tuple(want)} config.json describes")
            state[ours] = tensor
        module.load_state_dict(state, assign=True)
