"""Linear maps on faster paths that keep the math: decoding's products on a CPU on weights laid out
once for oneDNN (under bf16 autocast, and in fp32 where oneDNN's kernels beat MKL's), and training a
recurrence with its weight gradients computed once per sequence instead of once per step."""
from __future__ import annotations

import functools
import weakref
from typing import NamedTuple

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
    """oneDNN's packed fp32 products where torch runs AVX-512 kernels: there they beat MKL's sgemm at the
    decoder's shapes, while on AVX2 the two were level (docs/speed.md, bench/paths.py)."""
    return _PACKED_OPS and torch.backends.cpu.get_cpu_capability() == "AVX512"


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


class SequenceWeight(NamedTuple):
    """A weight used at every step of a recurrence in training, for step_linear (made by sequence_weight)."""

    weight: torch.Tensor  # an alias of the weight, whose backward computes its gradient
    steps: list  # (gradient of the output, input) of each step, filled by the steps' backward


class _SequenceWeightGrad(torch.autograd.Function):
    """The identity on a weight. Every step_linear on its alias passes no gradient to it, so autograd
    runs this backward after all of theirs (its incoming gradient is zeros) and it computes the weight's
    gradient in one product over all the steps: sum_t g_t^T x_t = G^T X.

    Why: per step, autograd would compute a (out, in) gradient from only the batch's rows and add it to
    the total, writing and re-reading the whole matrix once per step; memory traffic, not arithmetic,
    is what those small products cost on a CPU (docs/speed.md)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, steps: list) -> torch.Tensor:
        ctx.steps = steps
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx, _zeros: torch.Tensor):
        grads, inputs = zip(*ctx.steps)
        ctx.steps.clear()
        return torch.cat(grads).t().mm(torch.cat(inputs)), None  # (out, T*B) @ (T*B, in)


class _StepLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, steps: list) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.steps = steps
        return x.mm(weight.t())

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        ctx.steps.append((grad, x))
        return grad.mm(weight) if ctx.needs_input_grad[0] else None, None, None


def sequence_weight(weight: torch.Tensor) -> SequenceWeight:
    """`weight` for step_linear at every step of one sequence (one forward pass: make a new one per batch)."""
    steps: list = []
    return SequenceWeight(_SequenceWeightGrad.apply(weight, steps), steps)


def step_linear(x: torch.Tensor, w: SequenceWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (B, in) @ weight^T (+ bias) -> (B, out), as F.linear, with the weight's gradient left to w's
    single product over all steps. Only for fp32 training: autocast would need the products' dtypes
    carried into the backward."""
    y = _StepLinear.apply(x, w.weight, w.steps)
    return y if bias is None else y + bias


def defer_weight_grads(x: torch.Tensor) -> bool:
    """Whether a recurrence on x should use sequence_weight/step_linear: when it is trained in fp32 on a CPU
    (a GPU keeps torch.lstm_cell's fused kernel, which the written-out cell would replace by several)."""
    return x.device.type == "cpu" and torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
