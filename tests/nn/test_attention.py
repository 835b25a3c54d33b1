"""Bahdanau attention: weights that sum to 1 and are 0 on padding, padding that never changes a
result, and no state kept between calls."""
from __future__ import annotations

import torch

from s2s.nn.attention import BahdanauAttention


def _attention_inputs(seed: int = 0, device: torch.device = torch.device("cpu")):
    torch.manual_seed(seed)
    B, S, K, Q, A = 4, 7, 6, 5, 8
    attention = BahdanauAttention(K, Q, A)
    lengths = torch.tensor([7, 1, 4, 2])
    mask = torch.arange(S)[None, :] < lengths[:, None]
    keys = torch.randn(B, S, K)
    query = torch.randn(B, Q)
    return attention.to(device), query.to(device), keys.to(device), mask.to(device)


def test_attention_weights_sum_to_one_and_are_zero_on_padding(device):
    attention, query, keys, mask = _attention_inputs(device=device)
    context, weights = attention(query, attention.project_keys(keys), keys, mask)
    assert weights.shape == mask.shape and context.shape == (keys.size(0), keys.size(2))
    assert torch.allclose(weights.sum(-1), torch.ones(keys.size(0), device=device), atol=1e-6)
    assert torch.all(weights[~mask] == 0.0)  # exactly zero, not merely small
    assert torch.all(weights[mask] > 0.0)
    assert torch.allclose(weights[1, 0], torch.tensor(1.0, device=device))  # a one-token source gets all the weight


def test_attention_ignores_values_and_keys_on_padding(device):
    attention, query, keys, mask = _attention_inputs(device=device)
    noisy = keys.clone()
    noisy[~mask] = 1e3 * torch.randn(int((~mask).sum()), keys.size(2)).to(device)
    context, weights = attention(query, attention.project_keys(keys), keys, mask)
    context2, weights2 = attention(query, attention.project_keys(noisy), noisy, mask)
    assert torch.allclose(weights, weights2) and torch.allclose(context, context2, atol=1e-6)


def test_attention_context_is_the_weighted_sum_of_values(device):
    attention, query, keys, mask = _attention_inputs(device=device)
    values = torch.randn(keys.size(0), keys.size(1), 3).to(device)
    context, weights = attention(query, attention.project_keys(keys), values, mask)
    assert torch.allclose(context, (weights.unsqueeze(-1) * values).sum(1), atol=1e-6)


def test_attention_keeps_no_state_between_calls():
    """Keys are projected by the caller and passed in: the module stores nothing per batch."""
    attention, query, keys, mask = _attention_inputs()
    before = dict(attention.__dict__)
    attention(query, attention.project_keys(keys), keys, mask)
    assert attention.__dict__.keys() == before.keys()
    assert not list(attention.buffers())
