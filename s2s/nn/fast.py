"""A linear layer for decoding on a CPU under bf16 autocast, on weights laid out once for oneDNN."""
from __future__ import annotations

import weakref

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
