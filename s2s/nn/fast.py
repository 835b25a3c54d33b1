"""Decoding's linear layers on a CPU on weights laid out once for oneDNN: under bf16 autocast, and in fp32
where oneDNN's kernels beat MKL's."""
from __future__ import annotations

import functools
import weakref

import torch

# Packed weights per layer, outside the module: the packed tensor is opaque (no storage), and as an
# attribute it would break copy.deepcopy and pickling of the model.
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PACKED_OPS = torch.backends.mkldnn.is_available() and all(
    hasattr(torch.ops.mkldnn, op) for op in ("_reorder_linear_weight", "_linear_pointwise")
)

# Whether fp32 decoding products run on packed oneDNN weights: None = the CPU's default
# (packed_fp32_default); bench/paths.py sets it to time and compare both paths.
PACKED_FP32: bool | None = None


@functools.cache  # a fact about the machine (and the ISA limits it was started with)
def packed_fp32_default() -> bool:
    """oneDNN's packed fp32 products on every x86 CPU with AVX2 or AVX-512: they beat MKL's sgemm at the
    decoder's shapes on Intel with AVX-512, and on AMD EPYC by more (MKL takes a generic path there and
    barely uses a second thread at 64 rows), and were level with it on Intel limited to AVX2 (docs/speed.md,
    bench/paths.py). Elsewhere (ARM, older x86) nn.Linear's own BLAS."""
    return _PACKED_OPS and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def _packed_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype inference_linear runs x's product in on packed weights, or None for nn.Linear's own path."""
    if x.device.type != "cpu" or torch.is_grad_enabled() or not _PACKED_OPS:
        return None
    if torch.is_autocast_enabled("cpu"):
        return torch.bfloat16 if torch.get_autocast_dtype("cpu") == torch.bfloat16 else None
    fp32 = packed_fp32_default() if PACKED_FP32 is None else PACKED_FP32
    return torch.float32 if fp32 and x.dtype == torch.float32 else None


def inference_linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """layer(x), for decoding on a CPU. Under bf16 autocast F.linear lays the bf16 copy of the weight out
    for oneDNN at every call, a good part of each product's time (docs/speed.md); in fp32 on AVX-512
    oneDNN's kernels on a packed weight beat MKL's. Here the weight is laid out once (torch's own oneDNN
    ops, the ones torch.compile's CPU backend uses for frozen weights) and kept until it changes
    (in-place updates bump its version). bf16 results are nn.Linear's; fp32 ones differ from MKL's in
    the last bits (sums in another order), which left the benchmark's translations unchanged."""
    dtype = _packed_dtype(x)
    if dtype is None:
        return layer(x)
    key = (layer.weight.data_ptr(), layer.weight._version, dtype)
    packed = _PACKED.get(layer)
    if packed is None or packed[0] != key:
        weight = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach().to(dtype), None)
        bias = None if layer.bias is None else layer.bias.detach().to(dtype)
        packed = _PACKED[layer] = (key, weight, bias)
    return torch.ops.mkldnn._linear_pointwise(x.to(dtype), packed[1], packed[2], "none", [], "")

