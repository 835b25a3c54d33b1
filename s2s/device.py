"""Device selection (`auto` takes a CUDA GPU when there is one), mixed precision, and
independent inference batches spread over CPU workers."""
from __future__ import annotations

import contextlib
import functools
import weakref
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


# Packed weights per layer, outside the module: the packed tensor is opaque (no storage), and as an
# attribute it would break copy.deepcopy and pickling of the model.
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PACKED_OPS = torch.backends.mkldnn.is_available() and all(
    hasattr(torch.ops.mkldnn, op) for op in ("_reorder_linear_weight", "_linear_pointwise")
)


def inference_linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """layer(x); faster when decoding on a CPU under bf16 autocast, where F.linear lays the bf16 copy of
    the weight out for oneDNN at every call (~30% of the product's time for the 8,000 x 512 output layer,
    and 10-40% for this model's other decoder layers, in a micro-benchmark). Here the weight is laid out
    once (torch's own oneDNN ops, the ones torch.compile's CPU backend uses for frozen weights) and kept
    until it changes (in-place updates bump its version); the results are the same."""
    if not (
        x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and _PACKED_OPS
    ):
        return layer(x)
    key = (layer.weight.data_ptr(), layer.weight._version)
    packed = _PACKED.get(layer)
    if packed is None or packed[0] != key:
        weight = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach().to(torch.bfloat16), None)
        bias = None if layer.bias is None else layer.bias.detach().to(torch.bfloat16)
        packed = _PACKED[layer] = (key, weight, bias)
    return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), packed[1], packed[2], "none", [], "")


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
    CPU two batches on one thread each beat one batch on two threads (~1.3x for beam search, greedy
    and tagging on 2 cores; README, Speed). torch releases the GIL inside its ops.
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
