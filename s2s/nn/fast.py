"""Linear maps on faster paths that keep the math: one for decoding on a CPU under bf16 autocast, on
weights laid out once for oneDNN; one for training a recurrence, whose weight gradients are computed
once per sequence instead of once per step."""
from __future__ import annotations

import weakref
from typing import NamedTuple

import torch

# Packed weights per layer, outside the module: the packed tensor is opaque (no storage), and as an
# attribute it would break copy.deepcopy and pickling of the model.
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PACKED_OPS = torch.backends.mkldnn.is_available() and all(
    hasattr(torch.ops.mkldnn, op) for op in ("_reorder_linear_weight", "_linear_pointwise")
)


def inference_linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """layer(x); faster when decoding on a CPU under bf16 autocast, where F.linear lays the bf16 copy of
    the weight out for oneDNN at every call, a good part of each product's time (docs/speed.md). Here the weight is laid out
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
    """Whether a recurrence on x should use sequence_weight/step_linear: when it is trained in fp32."""
    return torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type)
