"""The run directory and its checkpoints.

    RUN_DIR/config.yaml      the resolved config (the keys of its task; data.dir and vocab.word_vectors absolute)
    RUN_DIR/spm.*.model      SentencePiece models (translation); *_vocab.json (tagging, classification)
    RUN_DIR/best.pt          model weights with the best dev score (+ config, task, version)
    RUN_DIR/last.pt          everything needed to resume: model, optimizer, scheduler, progress, RNG
    RUN_DIR/store/           the training data as a token store (s2s.data.store), rebuilt when the data changes
    RUN_DIR/metrics.jsonl    one JSON object per log or validation event (with time and seconds since the start)
    RUN_DIR/tensorboard/     the same values as TensorBoard event files, with train.tensorboard
    RUN_DIR/.lock            held by the `s2s train` writing the run (its PID inside); gone when it ends

Checkpoints are written to a temporary file and renamed, so a crash or a full disk never leaves a
half-written one; they carry a SHA-256 of their tensors, checked on load, so a damaged file is
refused instead of loading silently; they are read with weights_only=True, so loading cannot run code.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from s2s import __version__
from s2s import config as config_lib
from s2s.config import Config
from s2s.errors import S2SError

BEST, LAST, CONFIG, LOCK = "best.pt", "last.pt", "config.yaml", ".lock"
SAFETENSORS = "model.safetensors"  # written by `s2s export --format safetensors`, read in place of best.pt
# What each checksum covers: the payload's top-level entries that hold tensors.
CHECKSUM = "checksum"
PARTS = {"model": "model weights", "optimizer": "optimizer state", "ema": "weight average", "rng": "random state",
         "rank_rngs": "random states", "scheduler": "scheduler state"}


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


def _digest(value: Any, h: "hashlib._Hash") -> None:
    """Feed `value` to `h`: every tensor inside it (nested dicts, lists, tuples) with its place, dtype and shape,
    and every other value (the config, progress, versions) by its repr."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        for k, v in value.items():
            h.update(f"{k!r}:".encode())
            _digest(v, h)
    elif isinstance(value, (list, tuple)):
        h.update(f"{type(value).__name__}[".encode())
        for i, v in enumerate(value):
            h.update(f"{i}:".encode())
            _digest(v, h)
    else:
        h.update(f"{value!r};".encode())


def checksums(payload: dict[str, Any]) -> dict[str, str]:
    """SHA-256 of each top-level entry of `payload` (model, optimizer, config, progress, rng, ...)."""
    out = {}
    for name, value in payload.items():
        if name != CHECKSUM:
            h = hashlib.sha256()
            _digest(value, h)
            out[name] = h.hexdigest()
    return out


def save(payload: dict[str, Any], path: Path) -> None:
    """Write `payload` (with the checksums of its tensors) to `path` through a temporary file: on any
    failure, a full disk included, the temporary file is removed and the previous `path` is kept."""
    path = Path(path)
    buffer = io.BytesIO()  # serialised in memory: a failing disk write then surfaces as a plain OSError
    torch.save({**payload, CHECKSUM: checksums(payload)}, buffer)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())  # on the disk before the rename: a crash then leaves the old file or the new one
        os.replace(tmp, path)  # atomic on POSIX
    except BaseException as e:  # a full disk, Ctrl-C, ...: no half-written file left behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        if not isinstance(e, OSError):
            raise
        kept = f"the previous {path.name} is kept" if path.is_file() else f"no {path.name} was written"
        raise S2SError(f"{path}: cannot save ({e.strerror or e}); {kept}") from None


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise S2SError(f"{path}: no such checkpoint")
    if path.suffix == ".safetensors":
        return _load_safetensors(path, map_location)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a damaged archive or pickle surfaces as almost any exception type
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise S2SError(f"{path}: corrupt or truncated checkpoint ({first[:200]})") from None
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise S2SError(f"{path}: not an s2s checkpoint (no model weights or config inside)")
    expected = payload.pop(CHECKSUM, None)  # checkpoints of s2s 0.1 and early 0.2 have none: they load unchecked
    if isinstance(expected, dict):
        found = checksums(payload)
        for name, digest in expected.items():
            if found.get(name) != digest:
                what = PARTS.get(name, name)
                raise S2SError(f"{path}: checksum mismatch in its {what} (damaged file); "
                               "use the run's other checkpoint or train again")
    return payload


def _load_safetensors(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """A payload like best.pt's from `s2s export --format safetensors`: the weights (no pickle involved) and the
    config.yaml beside them."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        weights = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise S2SError(f"{path}: corrupt or truncated safetensors file ({str(e)[:200]})") from None
    if not (path.parent / CONFIG).is_file():
        raise S2SError(f"{path}: no {CONFIG} beside it (s2s export writes one)")
    return {"model": weights, "config": config_lib.read_yaml(path.parent / CONFIG)}


def run_dir_of(model: str | Path) -> Path:
    """The run directory of a --model argument: the directory itself, or the folder of a checkpoint file in it."""
    model = Path(model)
    return model.parent if model.is_file() else model


def find(model: str | Path, name: str = BEST) -> Path:
    """The checkpoint a --model argument names: a checkpoint file itself, or a run directory's `name`.

    A run directory without best.pt has not validated yet: its last.pt holds weights that no dev score
    chose (untrained ones, if it stopped early), so it is refused unless named on purpose (RUN/last.pt)."""
    model = Path(model)
    if model.is_file():
        return model
    if not model.is_dir():
        raise S2SError(f"{model}: no such run directory or checkpoint file")
    if (model / name).is_file():
        return model / name
    if name == BEST and (model / SAFETENSORS).is_file():  # a folder of `s2s export --format safetensors`
        return model / SAFETENSORS
    if name == BEST and (model / LAST).is_file():
        raise S2SError(f"{model}: the run has not validated yet (no {BEST}, only {LAST}); resume it with "
                       f"`s2s train {model / CONFIG} --out {model} --resume`, or pass --model {model / LAST} to use its current weights")
    raise S2SError(f"{model}: no checkpoint ({BEST} or {LAST}); train a model there first with `s2s train`")


def load_trained(model: str | Path, task: str) -> tuple[Config, dict[str, Any], Path]:
    """(resolved config, checkpoint payload, checkpoint path) of a trained run (a run directory's best.pt,
    or a checkpoint file named directly), checked to be for `task`."""
    path = find(model)
    payload = load(path)
    config = config_lib.read(payload["config"], where=str(path))
    if config.task != task:
        raise S2SError(f"{model}: this model was trained for {config.task}, not {task}")
    return config, payload, path


def load_weights(model: torch.nn.Module, payload: dict[str, Any], path: Path) -> torch.nn.Module:
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as e:
        raise S2SError(f"{path}: weights do not fit the model in its config ({str(e).splitlines()[0]})") from None
    return model


def run_task(model: str | Path) -> str:
    """The task of a --model argument: a run directory's config.yaml (or its checkpoint), or a checkpoint file's."""
    model = Path(model)
    if model.is_dir() and (model / CONFIG).is_file():
        return config_lib.load_run_config(model / CONFIG).task
    if model.is_dir():
        path = next((model / n for n in (BEST, LAST) if (model / n).is_file()), None) or find(model)
    else:
        path = find(model)
    return config_lib.read(load(path)["config"], str(path)).task


@contextlib.contextmanager
def lock(run_dir: Path) -> Iterator[None]:
    """Hold RUN_DIR/.lock (created with the directory) while training writes the run: a second `s2s train`
    on it fails at once, naming this process. flock belongs to the open file, so the kernel lets go
    when the process ends in any way, kill -9 included; a clean end also removes the file."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
                os.close(fd)
                raise S2SError(f"{run_dir}: in use by another `s2s train` (process {holder or 'unknown'}); "
                               "wait for it to end or choose another --out") from None
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    os.close(fd)
                    raise
                break  # a file system without locks: train unguarded, as before
            # The holder before us may have removed the file between our open and our lock: lock the file that is there.
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError as e:
        raise S2SError(f"{run_dir}: cannot write the run directory ({e.strerror or e})") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still held, so that nobody locks the file on its way out
        os.close(fd)


def upgrade(run_dir: str | Path) -> list[str]:
    """Rewrite an s2s 0.1 run directory's config.yaml and checkpoints in this version's config
    layout (weights untouched); returns the files rewritten."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise S2SError(f"{run_dir}: no such run directory")
    done = []
    if (run_dir / CONFIG).is_file() and config_lib.upgrade_file(run_dir / CONFIG):
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
