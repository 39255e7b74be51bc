"""The torch device a name means, refused by name where this machine does not have it, and
the autocast a precision setting (train.precision) means on it."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from seemore.errors import UserError


def resolve_device(name: str | torch.device) -> torch.device:
    """name: auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps. A device this
    machine lacks is a UserError here: torch's own errors come later and read like a bug
    ("Torch not compiled with CUDA enabled", "pin_memory=True requires ...")."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {name!r}; use cpu, cuda, cuda:N, mps or auto"
                        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "" if torch.version.cuda else f" (torch {torch.__version__} is a CPU build)"
            raise UserError(f"device {str(name)!r}: torch sees no CUDA GPU on this machine"
                            f"{build}")
        if device.index is not None and device.index >= count:
            raise UserError(f"device {str(name)!r}: this machine has {count} CUDA GPU(s), "
                            f"cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {str(name)!r}: MPS (Apple's GPUs) is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device {str(name)!r}: seemore runs on cpu, cuda or mps")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """What autocast runs matmuls in: bf16 or fp16 when asked for, bf16 when "auto" and the
    hardware runs it fast; None means plain fp32."""
    if precision != "auto":
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]
    if device.type == "cuda":
        fast = torch.cuda.is_bf16_supported()
    else:
        fast = device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return torch.bfloat16 if fast else None


def autocast_context(precision: str, device: torch.device):
    """torch.autocast for the precision on device, or a context that does nothing (fp32)."""
    dtype = autocast_dtype(precision, device)
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
