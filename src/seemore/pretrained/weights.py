"""The tensors of a Hugging Face model folder, read from its safetensors files one at a
time.

A folder holds model.safetensors, or shards listed in model.safetensors.index.json
("weight_map": tensor name -> file). A safetensors file is an 8-byte header length, a JSON
header (each tensor's dtype, shape and byte range) and the raw little-endian data. Only the
headers are read up front; a tensor's bytes are read when it is asked for, straight into
the tensor's own memory (no memory map whose pages would stay resident beside the copy), so
importing a checkpoint needs about its size in memory once.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
import torch.nn as nn

from seemore.errors import UserError

SINGLE, INDEX = "model.safetensors", "model.safetensors.index.json"
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
          "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
          "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


class Weights:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        single, index = self.folder / SINGLE, self.folder / INDEX
        if single.is_file():
            files = [single]
        elif index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
                files = [self.folder / name for name in dict.fromkeys(weight_map.values())]
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise UserError(f"{index}: unreadable index ({e})") from None
        else:
            raise UserError(f"{self.folder}: no {SINGLE} or {INDEX}")
        # name -> (file, dtype, shape, first byte, end byte)
        self.entries: dict[str, tuple[Path, torch.dtype, tuple[int, ...], int, int]] = {}
        for path in files:
            self.entries.update(_header(path))
        self.file_of = {name: entry[0] for name, entry in self.entries.items()}

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def get(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The tensor called name (in dtype, if given)."""
        if name not in self.entries:
            raise UserError(f"{self.folder}: the weights have no tensor {name}")
        path, stored, shape, begin, end = self.entries[name]
        tensor = torch.empty(shape, dtype=stored)
        with open(path, "rb") as f:
            f.seek(begin)
            if f.readinto(tensor.reshape(-1).view(torch.uint8).numpy()) != end - begin:
                raise UserError(f"{path}: {name} is cut short (a truncated file?)")
        return tensor if dtype is None else tensor.to(dtype)

    def load_into(self, module: nn.Module, names: dict[str, list[str]],
                  dtype: torch.dtype | None = None) -> None:
        """Give module (built on the meta device: no memory yet) its parameters: each of its
        names gets the concatenation of the checkpoint's tensors listed for it, reshaped
        where the two differ only in dimensions of size 1 (a class token stored as (D,)).
        A tensor listed for two names (a tied head) is read once."""
        expected = module.state_dict()
        uses = [name for theirs in names.values() for name in theirs]
        shared: dict[str, torch.Tensor] = {}
        state = {}
        for ours, theirs in names.items():
            parts = []
            for name in theirs:
                part = shared[name] if name in shared else self.get(name, dtype)
                if uses.count(name) > 1:
                    shared[name] = part
                parts.append(part)
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


def _header(path: Path) -> dict[str, tuple[Path, torch.dtype, tuple[int, ...], int, int]]:
    """Every tensor of a safetensors file: (file, dtype, shape, first byte, end byte)."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > size - 8:
                raise ValueError(f"a header of {length} bytes in a file of {size}")
            header = json.loads(f.read(length))
        entries = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            begin, end = (8 + length + offset for offset in entry["data_offsets"])
            dtype = DTYPES[entry["dtype"]]
            shape = tuple(entry["shape"])
            if end > size:
                raise ValueError(f"{name} ends at byte {end} of {size}: the file is truncated")
            if end - begin != torch.Size(shape).numel() * dtype.itemsize:
                raise ValueError(f"{name}: {end - begin} bytes for shape {shape}")
            entries[name] = (path, dtype, shape, begin, end)
    except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})") from None
    return entries
