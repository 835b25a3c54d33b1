"""Device selection (`auto` takes a CUDA GPU when there is one), mixed precision, and
independent inference batches spread over CPU workers."""
from __future__ import annotations

import contextlib
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

import torch

from s2s.errors import S2SError

T = TypeVar("T")
R = TypeVar("R")


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
    bf16 GEMMs run much faster than fp32; elsewhere bf16 would be emulated and slower."""
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


def cpu_workers(device: torch.device, workers: int) -> int:
    """How many batches to run at once: `workers`, or when 0 (auto) one per torch thread on a
    CPU and one on a GPU (which runs one batch's kernels at a time anyway)."""
    if workers < 0:
        raise S2SError(f"decode.workers (--workers) must be 0 (auto) or more, got {workers}")
    if workers:
        return workers
    return torch.get_num_threads() if device.type == "cpu" else 1


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """[fn(x) for x in items], in order, with up to `workers` items in flight on threads that
    share this process's torch threads (each worker's ops run on threads // workers of them).

    Why: a decoder step is some 40 small ops, most too small to split well over threads, so on a
    CPU two batches on one thread each beat one batch on two threads (docs/speed.md). torch releases
    the GIL inside its ops.
    fn runs in a worker thread, where grad mode and autocast are the thread's own: fn sets them.
    """
    workers = min(workers, len(items))
    if workers <= 1:
        return [fn(x) for x in items]
    threads = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(max(1, threads // workers),)) as pool:
            return list(pool.map(fn, items))
    finally:
        torch.set_num_threads(threads)  # new threads take the last value set in any thread
