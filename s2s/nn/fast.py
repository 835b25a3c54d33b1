"""Decoding's products on a CPU on weights laid out once for oneDNN: under bf16 autocast, and in fp32 on x86
CPUs with AVX2 or AVX-512, where oneDNN's kernels beat MKL's (the linear layers and the LSTM cell); on that fp32
path also a cheaper tanh. Training, GPUs and the ONNX export keep torch's own ops."""
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
    for oneDNN at every call, a good part of each product's time (docs/speed.md); in fp32 on x86 with AVX2
    or AVX-512 oneDNN's kernels on a packed weight beat MKL's. Here the weight is laid out once (torch's own oneDNN
    ops, the ones torch.compile's CPU backend uses for frozen weights) and kept until it changes
    (in-place updates bump its version). bf16 results are nn.Linear's; fp32 ones differ from MKL's in
    the last bits (sums in another order), which left the benchmark's translations unchanged."""
    dtype = _packed_dtype(x)
    if dtype is None:
        return layer(x)
    weight, bias = _packed(layer, 0, dtype, (layer.weight,), () if layer.bias is None else (layer.bias,))
    return torch.ops.mkldnn._linear_pointwise(x.to(dtype), weight, bias, "none", [], "")


def _packed(owner: torch.nn.Module, slot: int, dtype: torch.dtype, weights: tuple[torch.Tensor, ...],
            biases: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """owner's weights, joined along their input side and laid out for oneDNN, and the sum of its biases:
    made once and kept until one of them changes (in-place updates bump a tensor's version); `slot` tells
    apart several products of one owner."""
    key = (dtype, *((t.data_ptr(), t._version) for t in weights + biases))
    cache = _PACKED.setdefault(owner, {})
    if slot not in cache or cache[slot][0] != key:
        joined = torch.cat([w.detach() for w in weights], dim=1)
        bias = sum(b.detach() for b in biases).to(dtype) if biases else None
        cache[slot] = (key, torch.ops.mkldnn._reorder_linear_weight(joined.to(dtype), None), bias)
    return cache[slot][1], cache[slot][2]


def inference_lstm_cell(rnn: torch.nn.LSTM, layer: int, x: torch.Tensor,
                        hc: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.lstm_cell(x, hc, *rnn.all_weights[layer]), for decoding on a CPU. Where fp32 products run on
    oneDNN (inference_linear), the cell's two products are one, of [x, h] by the joined packed weights
    [W_ih, W_hh]: MKL's sgemm at decoding's 64 rows is the slow library on AMD CPUs (docs/speed.md)."""
    w_ih, w_hh, *biases = rnn.all_weights[layer]
    if _packed_dtype(x) != torch.float32:
        return torch.lstm_cell(x, hc, w_ih, w_hh, *biases)
    h, c = hc
    weight, bias = _packed(rnn, layer, torch.float32, (w_ih, w_hh), tuple(biases))
    gates = torch.ops.mkldnn._linear_pointwise(torch.cat([x, h], dim=1), weight, bias, "none", [], "")
    i, f, g, o = gates.chunk(4, dim=1)  # torch.lstm_cell's gate order
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * _tanh_from_sigmoid_(g)  # g: a view of gates, used once
    return torch.sigmoid(o) * _tanh_from_sigmoid_(c * 2.0, doubled=True), c  # c itself is returned


def inference_tanh_(x: torch.Tensor) -> torch.Tensor:
    """x.tanh_(), for decoding on a CPU: where fp32 products run on oneDNN (inference_linear), as 2σ(2x) − 1 in
    place. torch.tanh costs six sigmoids an element in this torch build, natively and under AVX2 (docs/speed.md);
    the two agree to 2e-7, absolute."""
    if _packed_dtype(x) != torch.float32:
        return x.tanh_()
    return _tanh_from_sigmoid_(x)


def _tanh_from_sigmoid_(x: torch.Tensor, doubled: bool = False) -> torch.Tensor:
    """tanh(x) = 2σ(2x) − 1, in x's storage; doubled: x already holds 2x (a fresh tensor made by the caller)."""
    return (x if doubled else x.mul_(2.0)).sigmoid_().mul_(2.0).sub_(1.0)
