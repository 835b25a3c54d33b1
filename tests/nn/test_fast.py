"""Decoding's linear layers on weights laid out once for oneDNN compute what nn.Linear computes."""
from __future__ import annotations

import copy

import pytest
import torch

from s2s.device import cpu_has_fast_bf16
from s2s.nn.fast import inference_linear

needs_bf16 = pytest.mark.skipif(not cpu_has_fast_bf16(), reason="this CPU has no native bf16 (AMX or AVX512-BF16)")


@needs_bf16
@pytest.mark.parametrize("bias", [True, False])
def test_inference_linear_equals_nn_linear_and_follows_weight_updates(bias):
    torch.manual_seed(0)
    layer = torch.nn.Linear(48, 33, bias=bias)
    x = torch.randn(7, 48)

    def both():  # a fresh autocast region each time: autocast caches its own bf16 copy of a weight per region
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return inference_linear(layer, x), layer(x)

    fast, plain = both()
    assert fast.dtype == plain.dtype == torch.bfloat16 and torch.equal(fast, plain)
    with torch.no_grad():
        layer.weight.mul_(-2.0)  # as an optimizer step does between validations
    fast, plain = both()
    assert torch.equal(fast, plain)
    assert list(layer.state_dict()) == (["weight", "bias"] if bias else ["weight"])  # checkpoints are unchanged
    copy.deepcopy(layer)  # the packed weight (an opaque tensor) is not part of the module
    with torch.autocast("cpu", dtype=torch.bfloat16):  # training: the plain layer, so gradients flow
        assert inference_linear(layer, x).requires_grad



def test_fp32_inference_linear_on_packed_weights_is_nn_linear_to_rounding(monkeypatch):
    """The fp32 oneDNN path: nn.Linear's result to fp32 rounding (the sums run in another order), followed across
    weight updates, and only where chosen: not in training, nor where PACKED_FP32 is off."""
    from s2s.nn import fast

    if not fast._PACKED_OPS:
        pytest.skip("this torch build has no oneDNN packed linear ops")
    torch.manual_seed(0)
    layer, x = torch.nn.Linear(48, 33), torch.randn(7, 48)
    monkeypatch.setattr(fast, "PACKED_FP32", True)
    with torch.no_grad():
        assert fast._packed_dtype(x) == torch.float32
        torch.testing.assert_close(inference_linear(layer, x), layer(x), rtol=1e-5, atol=1e-5)
        layer.weight.mul_(-2.0)
        torch.testing.assert_close(inference_linear(layer, x), layer(x), rtol=1e-5, atol=1e-5)
    assert fast._packed_dtype(x) is None and inference_linear(layer, x).requires_grad  # training: the plain layer
    monkeypatch.setattr(fast, "PACKED_FP32", False)
    with torch.no_grad():
        assert fast._packed_dtype(x) is None
    assert fast.packed_fp32_default() == (torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"))


@pytest.mark.parametrize("capability, packed", [("default", False), ("avx2", True)])
def test_fp32_library_is_chosen_from_the_isa_torch_runs(capability, packed):
    """The choice is read at run time: a CPU (or an emulation) without AVX2 keeps nn.Linear's BLAS; AVX2 and
    AVX-512 take the packed oneDNN path (where the torch build has it)."""
    import os
    import platform
    import subprocess
    import sys

    from s2s.nn import fast

    if packed and not (fast._PACKED_OPS and platform.machine().lower() in ("x86_64", "amd64")):
        pytest.skip("no oneDNN packed linear ops on this build or CPU")
    out = subprocess.run([sys.executable, "-c", "from s2s.nn import fast; print(fast.packed_fp32_default())"],
                         env={**os.environ, "ATEN_CPU_CAPABILITY": capability},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(packed)


@pytest.mark.parametrize("bias", [True, False])
def test_inference_lstm_cell_is_torch_lstm_cell_to_rounding(monkeypatch, bias):
    """Decoding's LSTM cell on one packed product of [x, h]: torch.lstm_cell's h and c to fp32 rounding, for each
    layer of a stack, across weight updates; torch.lstm_cell itself where the packed fp32 path is off or in training."""
    from s2s.nn import fast

    if not fast._PACKED_OPS:
        pytest.skip("this torch build has no oneDNN packed linear ops")
    torch.manual_seed(0)
    rnn = torch.nn.LSTM(12, 16, num_layers=2, bias=bias)
    x, h, c = torch.randn(5, 12), torch.randn(5, 16), torch.randn(5, 16)
    monkeypatch.setattr(fast, "PACKED_FP32", True)
    with torch.no_grad():
        for layer, inp in ((0, x), (1, h)):
            want = torch.lstm_cell(inp, (h, c), *rnn.all_weights[layer])
            torch.testing.assert_close(fast.inference_lstm_cell(rnn, layer, inp, (h, c)), want, rtol=1e-5, atol=1e-5)
        rnn.weight_hh_l0.mul_(-2.0)  # as an optimizer step does between validations
        if bias:
            rnn.bias_ih_l0.add_(1.0)
        torch.testing.assert_close(fast.inference_lstm_cell(rnn, 0, x, (h, c)),
                                   torch.lstm_cell(x, (h, c), *rnn.all_weights[0]), rtol=1e-5, atol=1e-5)
    assert fast.inference_lstm_cell(rnn, 0, x, (h, c))[0].requires_grad  # training: torch.lstm_cell, gradients flow
    monkeypatch.setattr(fast, "PACKED_FP32", False)
    with torch.no_grad():
        assert torch.equal(fast.inference_lstm_cell(rnn, 0, x, (h, c))[0], torch.lstm_cell(x, (h, c), *rnn.all_weights[0])[0])


def test_inference_tanh_is_tanh_where_chosen(monkeypatch):
    """Decoding's tanh: torch.tanh to 2e-7 on the fast fp32 path, torch.tanh itself elsewhere and in training."""
    from s2s.nn import fast

    if not fast._PACKED_OPS:
        pytest.skip("this torch build has no oneDNN packed linear ops")
    x = torch.linspace(-20, 20, 4001)
    monkeypatch.setattr(fast, "PACKED_FP32", True)
    with torch.no_grad():
        out = fast.inference_tanh_(x.clone())
        torch.testing.assert_close(out, torch.tanh(x), rtol=0, atol=3e-7)
        assert out.abs().max() <= 1.0
    y = x.clone().requires_grad_(True) * 1.0
    assert torch.equal(fast.inference_tanh_(y), torch.tanh(x))  # training: tanh_ itself
    monkeypatch.setattr(fast, "PACKED_FP32", False)
    with torch.no_grad():
        assert torch.equal(fast.inference_tanh_(x.clone()), torch.tanh(x))
