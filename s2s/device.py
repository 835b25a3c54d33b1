"""Device selection: `auto` takes a CUDA GPU when there is one."""
from __future__ import annotations

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
