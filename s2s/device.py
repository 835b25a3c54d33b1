"""Device selection (`auto` takes a CUDA GPU when there is one), mixed precision,
independent inference batches spread over CPU workers, and a one-line account of the CPU's ISA."""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Mapping, Sequence, TypeVar

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


# torch's vector ISAs on x86, weakest first (torch.backends.cpu.get_cpu_capability()).
X86_LEVELS = ("DEFAULT", "AVX2", "AVX512")
# Three libraries pick their own ISA: torch's kernels (ATEN_CPU_CAPABILITY), oneDNN (the LSTM layers, bf16
# matrix products; ONEDNN_MAX_CPU_ISA) and MKL (fp32 matrix products: nn.Linear; MKL_ENABLE_INSTRUCTIONS).
# Each ignores the others' variable, so an AVX2 CPU is emulated only with all three set.
LIMITS = {"oneDNN": "ONEDNN_MAX_CPU_ISA", "MKL": "MKL_ENABLE_INSTRUCTIONS"}


def cpu_model_and_flags(cpuinfo: str | None = None) -> tuple[str, set[str]]:
    """The CPU's model name and feature flags from /proc/cpuinfo (or the text given); elsewhere
    platform.processor() and no flags."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:  # x86 / ARM
            flags = set(value.split())
    return model or platform.processor() or platform.machine() or "unknown CPU", flags


def native_level(flags: set[str]) -> str | None:
    """The vector ISA torch would pick on an x86 CPU with these flags; None where unknown (not x86)."""
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "AVX512"
    if {"avx2", "fma"} <= flags:
        return "AVX2"
    return "DEFAULT" if "sse2" in flags else None


def _limit(env: Mapping[str, str], library: str) -> str:
    """The ISA `library` is limited to by its variable in env, upper case; "" when not limited."""
    value = env.get(LIMITS[library], "").strip().upper()
    return "" if value in ("", "ALL", "DEFAULT") else value


def describe_cpu(model: str, flags: set[str], capability: str, env: Mapping[str, str], onednn_isa: str = "",
                 mkl_isa: str = "", has_mkl: bool = True) -> str:
    """One line: the CPU model; the vector ISA torch's kernels run (`emulated` when below what the CPU has,
    naming the libraries left unlimited); for oneDNN and MKL their limit from env and the ISA each reports
    (when probed); whether AMX and AVX-512 bf16 are there, and `unused` when both libraries are limited below
    AVX-512 (torch's own kernels use neither)."""
    limits = {library: _limit(env, library) for library in LIMITS}
    if not has_mkl:
        del limits["MKL"]
    below = {library: bool(limit) and not limit.startswith(("AVX512", "AVX10")) for library, limit in limits.items()}
    runs_as = capability
    native = native_level(flags)
    if native in X86_LEVELS and capability in X86_LEVELS and X86_LEVELS.index(capability) < X86_LEVELS.index(native):
        free = [library for library in limits if not below[library]]
        runs_as += f" (emulated on {native}" + (f"; {' and '.join(free)} not limited)" if free else ")")
    fields = [f"CPU: {model}", f"runs as {runs_as}"]
    for library, reported in (("oneDNN", onednn_isa), ("MKL", mkl_isa)):
        if library not in limits:
            fields.append(f"{library}: none")
            continue
        text = f"limited to {limits[library]} ({LIMITS[library]})" if limits[library] else "not limited"
        fields.append(f"{library}: {text}" + (f", reports {reported}" if reported else ""))
    unused = ", unused" if all(below.values()) else ""
    fields.append("AMX: " + ("yes" + unused if {"amx_tile", "amx_bf16"} <= flags else "no"))
    fields.append("AVX-512 bf16: " + ("yes" + unused if "avx512_bf16" in flags else "no"))
    return " | ".join(fields)


def cpu_description(onednn_isa: str = "", mkl_isa: str = "") -> str:
    """describe_cpu for this process's CPU and environment; the reported ISAs from probe_isas() if wanted."""
    model, flags = cpu_model_and_flags()
    return describe_cpu(model, flags, torch.backends.cpu.get_cpu_capability(), os.environ, onednn_isa, mkl_isa,
                        torch.backends.mkl.is_available())


# One LSTM step (a oneDNN primitive in torch's CPU builds) and one fp32 matrix product (MKL's SGEMM).
_PROBE = ("import torch\nwith torch.no_grad():\n    torch.nn.LSTM(8, 8)(torch.zeros(1, 1, 8))\n"
          "    torch.nn.functional.linear(torch.zeros(64, 64), torch.zeros(64, 64))")


def probe_isas(timeout: float = 60.0) -> dict[str, str]:
    """{"oneDNN": ..., "MKL": ...}: the ISA each library itself says it runs (oneDNN's ONEDNN_VERBOSE `isa:`
    line; MKL's MKL_VERBOSE banner, shortened to the ISAs it names), from a fresh Python process in this
    environment (each prints it once per process); "" where it says nothing."""
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], env=os.environ | {"ONEDNN_VERBOSE": "1", "MKL_VERBOSE": "1"},
                              capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return {"oneDNN": "", "MKL": ""}
    out = done.stdout + done.stderr
    onednn = re.search(r"info,cpu,isa:(.+)", out)
    banner = re.search(r"MKL_VERBOSE oneMKL.*? architecture (.+)", out)
    # "Intel(R) Advanced Vector Extensions 512 (Intel(R) AVX-512) with ..., and ... (Intel(R) AMX) ...": the short names
    mkl = ", ".join(re.findall(r"\(Intel\(R\) ([A-Za-z0-9.-]+)\)", banner.group(1))) if banner else ""
    return {"oneDNN": onednn.group(1).strip() if onednn else "", "MKL": mkl}


def probe_onednn_isa(timeout: float = 60.0) -> str:
    """The ISA oneDNN itself reports it runs (see probe_isas)."""
    return probe_isas(timeout)["oneDNN"]
