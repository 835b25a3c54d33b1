"""The run directory and its checkpoints.

    RUN_DIR/config.yaml      the resolved config (the keys of its task)
    RUN_DIR/spm.*.model      SentencePiece models (translation); *_vocab.json (tagging, classification)
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

from s2s import __version__
from s2s import config as config_lib
from s2s.config import Config
from s2s.errors import S2SError

BEST, LAST, CONFIG = "best.pt", "last.pt", "config.yaml"


def best_payload(config: Config, weights: dict[str, Any]) -> dict[str, Any]:
    """What best.pt holds: the weights, and the config that rebuilds their model."""
    return {"version": __version__, "task": config.task, "config": config_lib.task_dict(config), "model": weights}


def last_payload(config: Config, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 progress: dict, rng: dict, rank_rngs: list | None = None, ema: torch.nn.Module | None = None) -> dict[str, Any]:
    """What last.pt holds: best.pt's fields and everything a resumed run needs to go on exactly."""
    payload = best_payload(config, model.state_dict()) | {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "progress": dict(progress),
        "rng": rng,
    }
    if rank_rngs:
        payload["rank_rngs"] = rank_rngs
    if ema is not None:
        payload["ema"] = ema.state_dict()
    return payload


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
    config = config_lib.read(payload["config"], where=str(path))
    if config.task != task:
        raise S2SError(f"{run_dir}: this model was trained for {config.task}, not {task}")
    return config, payload, path


def load_weights(model: torch.nn.Module, payload: dict[str, Any], path: Path) -> torch.nn.Module:
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as e:
        raise S2SError(f"{path}: weights do not fit the model in its config ({str(e).splitlines()[0]})") from None
    return model


def run_task(run_dir: str | Path) -> str:
    """The task a run directory was trained for, from its config.yaml (or its checkpoint)."""
    run_dir = Path(run_dir)
    if (run_dir / CONFIG).is_file():
        return config_lib.load_run_config(run_dir / CONFIG).task
    path = find(run_dir)
    return config_lib.read(load(path)["config"], str(path)).task


def upgrade(run_dir: str | Path) -> list[str]:
    """Rewrite an s2s 0.1 run directory's config.yaml and checkpoints in this version's config
    layout (weights untouched); returns the files rewritten."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise S2SError(f"{run_dir}: no such run directory")
    done = []
    if (run_dir / CONFIG).is_file():
        raw = config_lib.read_yaml(run_dir / CONFIG)
        if config_lib.is_legacy(raw):
            config_lib.save(config_lib.read(raw, str(run_dir / CONFIG)), run_dir / CONFIG)
            done.append(CONFIG)
    for name in (BEST, LAST):
        if (run_dir / name).is_file():
            payload = load(run_dir / name)
            if config_lib.is_legacy(payload["config"]):
                payload["config"] = config_lib.task_dict(config_lib.read(payload["config"], str(run_dir / name)))
                payload["version"] = __version__
                save(payload, run_dir / name)
                done.append(name)
    if not done and not any((run_dir / n).is_file() for n in (CONFIG, BEST, LAST)):
        raise S2SError(f"{run_dir}: not a run directory (no {CONFIG}, {BEST} or {LAST})")
    return done
