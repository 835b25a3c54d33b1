"""Device selection (`auto` takes a CUDA GPU when there is one) and mixed precision."""
from __future__ import annotations

import contextlib
import functools

import torch

from s2s.errors import S2SError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise S2SError("device 'cuda' requested but no CUDA GPU is available (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise S2SError(f"unknown device {name!r}; valid: auto, cpu, cuda")
    return torch.device(name)


@functools.cache  # a fact about the machine; autocast() asks at every training step
def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matrix instructions (AVX512-BF16, AMX), where oneDNN runs
    bf16 GEMMs 3-6x faster than fp32; elsewhere bf16 would be emulated and slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype for `device`, or None for plain fp32: bf16 on CUDA (fp16 on GPUs
    without bf16) and on CPUs with native bf16; None when disabled or on other CPUs."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_fast_bf16() else None


def autocast(device: torch.device, enabled: bool):
    """Mixed precision for the block: matrix products in amp_dtype, the rest in fp32."""
    dtype = amp_dtype(device, enabled)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
