"""The shared encoder: shapes, masks, padding that never changes a result (forward or backward), and mixed precision."""
from __future__ import annotations

import pytest
import torch

from s2s.data.batching import pad
from s2s.device import amp_dtype, autocast
from s2s.nn.encoder import Encoder

VOCAB, EMB, HIDDEN = 20, 8, 8

CONFIGS = [
    pytest.param(cell, bidirectional, layers, id=f"{cell}-{'bi' if bidirectional else 'uni'}-{layers}l")
    for cell in ("lstm", "gru", "rnn")
    for bidirectional in (True, False)
    for layers in (1, 2)
]


def _sentences(seed: int = 0, lengths=(5, 1, 7, 3)) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, VOCAB, (n,), generator=g).tolist() for n in lengths]  # ids >= 1: no PAD inside


def _encoder(cell: str, bidirectional: bool, layers: int, device: torch.device = torch.device("cpu")) -> Encoder:
    torch.manual_seed(0)
    # dropout > 0 so that eval() is what makes the results deterministic, as in decoding
    return Encoder(VOCAB, EMB, HIDDEN, layers, cell, dropout=0.2, bidirectional=bidirectional).eval().to(device)


def _padded(sentences: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ids on `device`; lengths stay on the CPU, where the data pipeline makes them."""
    tokens, lengths = pad(sentences)
    return tokens.to(device), lengths


@pytest.mark.parametrize("cell, bidirectional, layers", CONFIGS)
def test_output_shapes(cell, bidirectional, layers, device):
    encoder = _encoder(cell, bidirectional, layers, device)
    tokens, lengths = _padded(_sentences(), device)
    out = encoder(tokens, lengths)
    assert out.states.device == out.mask.device == out.final.device == tokens.device
    directions = 2 if bidirectional else 1
    B, T = tokens.shape
    assert encoder.output_size == HIDDEN * directions
    assert out.states.shape == (B, T, HIDDEN * directions)
    assert out.mask.shape == (B, T) and out.mask.dtype == torch.bool
    assert out.final.shape == (B, HIDDEN * directions)


@pytest.mark.parametrize("cell, bidirectional, layers", CONFIGS)
def test_padding_invariance(cell, bidirectional, layers, device):
    """A sentence encoded alone gives the same states (on its real positions) and final state
    as its row in a padded batch."""
    encoder = _encoder(cell, bidirectional, layers, device)
    sentences = _sentences()
    tokens, lengths = _padded(sentences, device)
    with torch.no_grad():
        batch = encoder(tokens, lengths)
        for i, s in enumerate(sentences):
            alone = encoder(torch.tensor([s], device=device), torch.tensor([len(s)]))
            n = len(s)
            assert torch.allclose(alone.states[0, :n], batch.states[i, :n], atol=1e-5)
            assert torch.allclose(alone.final[0], batch.final[i], atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padding_token_values_do_not_matter(cell, device):
    """Whatever sits in the padded positions, real positions are unchanged and padded states are zero."""
    encoder = _encoder(cell, True, 2, device)
    tokens, lengths = _padded(_sentences(), device)
    noisy = tokens.clone()
    noisy[tokens == 0] = 5
    with torch.no_grad():
        a, b = encoder(tokens, lengths), encoder(noisy, lengths)
    assert torch.equal(a.mask, b.mask)
    assert torch.allclose(a.states[a.mask], b.states[a.mask], atol=1e-6)
    assert torch.allclose(a.final, b.final, atol=1e-6)
    assert torch.count_nonzero(a.states[~a.mask]) == 0
    assert torch.count_nonzero(b.states[~b.mask]) == 0


def test_mask_is_true_exactly_on_real_tokens(device):
    encoder = _encoder("lstm", True, 1, device)
    sentences = _sentences(lengths=(3, 7, 1))
    tokens, lengths = _padded(sentences, device)
    out = encoder(tokens, lengths)
    expected = torch.tensor([[j < len(s) for j in range(tokens.size(1))] for s in sentences])
    assert torch.equal(out.mask.cpu(), expected)
    assert torch.equal(out.mask.sum(1).cpu(), lengths)


def test_final_state_joins_last_forward_and_first_backward_state(device):
    """final = [forward state at the last real token; backward state at the first token]."""
    encoder = _encoder("gru", True, 1, device)
    tokens, lengths = _padded(_sentences(), device)
    out = encoder(tokens, lengths)
    for i, n in enumerate(lengths.tolist()):
        assert torch.allclose(out.final[i, :HIDDEN], out.states[i, n - 1, :HIDDEN], atol=1e-6)
        assert torch.allclose(out.final[i, HIDDEN:], out.states[i, 0, HIDDEN:], atol=1e-6)


def test_feature_dim_joins_extra_features(device):
    torch.manual_seed(0)
    encoder = Encoder(VOCAB, EMB, HIDDEN, feature_dim=3).eval().to(device)
    tokens, lengths = _padded(_sentences(), device)
    features = torch.randn(*tokens.shape, 3).to(device)
    out = encoder(tokens, lengths, features)
    assert out.states.shape == (tokens.size(0), tokens.size(1), 2 * HIDDEN)
    assert not torch.allclose(out.states, encoder(tokens, lengths, torch.zeros_like(features)).states)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("layers", [1, 2])
def test_unpacked_inference_encoder_equals_packed(cell, bidirectional, layers):
    """Without gradients the CPU encoder skips packing (oneDNN's whole-sequence kernel): same states and finals."""
    torch.manual_seed(0)
    enc = Encoder(50, 8, 6, layers, cell, 0.3, bidirectional, feature_dim=3).eval()
    tokens, lengths, feats = torch.randint(1, 50, (5, 9)), torch.tensor([9, 3, 1, 7, 9]), torch.randn(5, 9, 3)
    packed = enc(tokens, lengths, feats)  # gradients on: the packed path
    with torch.inference_mode():
        unpacked = enc(tokens, lengths, feats)
    assert torch.allclose(unpacked.states, packed.states, atol=1e-6)
    assert torch.allclose(unpacked.final, packed.final, atol=1e-6)
    assert torch.equal(unpacked.mask, packed.mask) and (unpacked.states[~unpacked.mask] == 0).all()


def test_input_size_projects_real_values_in_place_of_the_embedding(device):
    torch.manual_seed(0)
    tokens_only = Encoder(VOCAB, EMB, HIDDEN)
    assert "embed.weight" in tokens_only.state_dict() and not any(k.startswith("project") for k in tokens_only.state_dict())
    encoder = Encoder(0, EMB, HIDDEN, cell="gru", bidirectional=False, input_size=3).eval().to(device)
    assert "project.weight" in encoder.state_dict() and not any(k.startswith("embed") for k in encoder.state_dict())
    x, lengths = torch.randn(4, 6, 3).to(device), torch.tensor([6, 2, 6, 4])
    out = encoder(x, lengths)
    assert out.states.shape == (4, 6, HIDDEN) and out.final.shape == (4, HIDDEN)
    # padding never changes a result: the values past each length do not reach the final state
    assert torch.allclose(encoder(x.masked_fill(~out.mask[:, :, None], 9.0), lengths).final, out.final, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_backward_reaches_every_weight_and_never_padding(cell, device):
    """Training's backward through the packed RNN: every weight gets a finite gradient, and the inputs at padded
    positions get exactly none (padding changes no gradient either)."""
    torch.manual_seed(0)
    encoder = Encoder(0, EMB, HIDDEN, num_layers=2, cell=cell, input_size=3).to(device)
    x = torch.randn(4, 6, 3, device=device, requires_grad=True)
    lengths = torch.tensor([6, 2, 5, 1])
    out = encoder(x, lengths)
    (out.states.square().sum() + out.final.sum()).backward()
    for name, p in encoder.named_parameters():
        assert p.grad is not None and p.grad.device == p.device and torch.isfinite(p.grad).all(), name
    assert (x.grad[~out.mask] == 0).all() and (x.grad[out.mask].abs().sum(-1) > 0).all()


def test_mixed_precision_never_computes_in_fp16_without_loss_scaling(device):
    """train.amp (on a GPU) and train.cpu_amp train under bf16 autocast, which needs no loss scaling: the
    trainer scales the loss only when the amp dtype is fp16 (GPUs without bf16). So under bf16 autocast
    the encoder's states must not come out fp16, whose gradients would underflow unscaled. (torch's autocast
    wrapper for cuDNN's RNNs has cast to fp16 whatever dtype autocast was given.)"""
    encoder = _encoder("lstm", True, 2, device).train()
    tokens, lengths = _padded(_sentences(), device)
    with autocast(device, True):
        out = encoder(tokens, lengths)
    assert amp_dtype(device, True) == torch.float16 or out.states.dtype != torch.float16, out.states.dtype
