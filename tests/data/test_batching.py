"""Padding and length-bucketed batches: every example exactly once, within max_tokens, similar lengths
together, and an order fixed by (seed, epoch)."""
from __future__ import annotations

import random

import pytest

from s2s.data.batching import pad, token_batches as _token_batches


def token_batches(*args, **kwargs) -> list[list[int]]:
    return [b.tolist() for b in _token_batches(*args, **kwargs)]


def test_pad_single():
    tokens, lengths = pad([[4, 5]])
    assert tokens.tolist() == [[4, 5]] and lengths.tolist() == [2]


def _lengths(n: int = 60, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, 7) for _ in range(n)] + [30]  # the last example alone exceeds max_tokens


def test_token_batches_cover_every_index_exactly_once():
    lengths = _lengths()
    batches = token_batches(lengths, max_tokens=20, seed=1, epoch=0)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(batches)


@pytest.mark.parametrize("max_tokens", [1, 7, 20, 64, 10_000])
def test_token_batches_respect_max_tokens(max_tokens):
    lengths = _lengths()
    for b in token_batches(lengths, max_tokens=max_tokens, seed=1, epoch=0):
        padded = len(b) * max(lengths[i] for i in b)
        assert padded <= max_tokens or len(b) == 1  # only a single over-long example may exceed it
    over = token_batches(lengths, max_tokens=20, seed=1, epoch=0)
    assert [len(lengths) - 1] in over  # the length-30 example sits alone


def test_token_batches_group_similar_lengths():
    lengths = _lengths()
    batches = token_batches(lengths, max_tokens=20, seed=1, epoch=0)
    # Sorted by length before cutting: batches do not interleave in length.
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    for (lo1, hi1), (lo2, hi2) in zip(spans, spans[1:]):
        assert hi1 <= lo2


def test_token_batches_are_deterministic_per_seed_and_epoch_and_differ_across_epochs():
    lengths = _lengths()
    a = token_batches(lengths, 20, seed=3, epoch=2)
    assert a == token_batches(lengths, 20, seed=3, epoch=2)
    assert a != token_batches(lengths, 20, seed=3, epoch=3)
    assert a != token_batches(lengths, 20, seed=4, epoch=2)
    # A different order of the same examples.
    flat = sorted(i for b in token_batches(lengths, 20, seed=3, epoch=3) for i in b)
    assert flat == sorted(i for b in a for i in b)


def test_token_batches_empty():
    assert token_batches([], 20, seed=0, epoch=0) == []


def _reference_batches(lengths: list[int], max_tokens: int, seed: int, epoch: int) -> list[list[int]]:
    """The plain-Python batching of s2s 0.2.0, which the array version must reproduce batch for batch
    (so runs keep their batch order across the change)."""
    rng = random.Random(seed * 100_003 + epoch)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches, current = [], []
    for i in order:
        if current and lengths[i] * (len(current) + 1) > max_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


@pytest.mark.parametrize("max_tokens", [1, 5, 20, 64, 500, 10_000])
def test_token_batches_equal_the_reference_batching(max_tokens):
    rng = random.Random(max_tokens)
    for trial in range(20):
        lengths = [rng.randint(1, 40) for _ in range(rng.randint(1, 300))]
        assert token_batches(lengths, max_tokens, seed=trial, epoch=2) == _reference_batches(lengths, max_tokens, trial, 2)
