"""The run directory and its checkpoints.

    RUN_DIR/config.yaml      the resolved config
    RUN_DIR/spm.*.model      SentencePiece models
    RUN_DIR/best.pt          model weights with the best dev score (+ config, task, version)
    RUN_DIR/last.pt          everything needed to resume: model, optimizer, scheduler, progress, RNG
    RUN_DIR/metrics.jsonl    one JSON object per log or validation event

Checkpoints are written to a temporary file and renamed, so a crash never leaves a
half-written one, and are read with weights_only=True, so loading cannot run code.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from s2s import config as config_lib
from s2s.config import Config
from s2s.errors import S2SError

BEST, LAST = "best.pt", "last.pt"


def save(payload: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic on POSIX


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    if not path.is_file():
        raise S2SError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a damaged archive or pickle surfaces as almost any exception type
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise S2SError(f"{path}: corrupt or truncated checkpoint ({first[:200]})") from None
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise S2SError(f"{path}: not an s2s checkpoint (no model weights or config inside)")
    return payload


def find(run_dir: Path, prefer: str = BEST) -> Path:
    """The checkpoint to load from a run directory: `prefer`, else the other one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise S2SError(f"{run_dir}: no such run directory")
    for name in (prefer, LAST if prefer == BEST else BEST):
        if (run_dir / name).is_file():
            return run_dir / name
    raise S2SError(f"{run_dir}: no checkpoint ({BEST} or {LAST}); train a model there first with `s2s train`")


def load_trained(run_dir: str | Path, task: str) -> tuple[Config, dict[str, Any], Path]:
    """(resolved config, checkpoint payload, checkpoint path) of a trained run, checked to be for `task`."""
    run_dir = Path(run_dir)
    path = find(run_dir)
    payload = load(path)
    config = config_lib.from_dict(payload["config"], where=str(path))
    if config.task != task:
        raise S2SError(f"{run_dir}: this model was trained for {config.task}, not {task}")
    return config, payload, path


def load_weights(model: torch.nn.Module, payload: dict[str, Any], path: Path) -> torch.nn.Module:
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as e:
        raise S2SError(f"{path}: weights do not fit the model in its config ({str(e).splitlines()[0]})") from None
    return model
