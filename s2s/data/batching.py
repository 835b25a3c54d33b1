"""Padding and length-bucketed batches, shared by every task."""
from __future__ import annotations

import random

import numpy as np
import torch


def pad(seqs: list[list[int]], value: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Id lists -> (B, T) tensor padded with `value` and (B,) lengths."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), int(lengths.max())), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out, lengths


def token_batches(lengths, max_tokens: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Group example indices into batches of similar length, each with at most max_tokens padded
    tokens (batch size * longest example; an example longer than that alone), in a shuffled order.

    The order depends only on (seed, epoch), so a resumed run sees the same batches. The batches are
    views into one index array: for millions of examples, lists of Python ints would take ~36 bytes each.
    """
    lengths = np.asarray(lengths)
    n = len(lengths)
    rng = random.Random(seed * 100_003 + epoch)
    # Sorted by length, ties in a random order (Python's generator: the same batches as s2s 0.2.0).
    noise = np.fromiter((rng.random() for _ in range(n)), dtype=np.float64, count=n)
    order = np.lexsort((noise, lengths)).astype(np.int32 if n < 2**31 else np.int64)
    del noise
    ordered = lengths[order].astype(np.int64)
    batches: list[np.ndarray] = []
    start = 0
    while start < n:
        # Cut where size * longest would exceed max_tokens: sorted, the newest example is the longest,
        # so the cost of taking examples start..j is lengths[j] * (j - start + 1), rising with j.
        room = max(max_tokens // max(int(ordered[start]), 1), 1)
        window = ordered[start : start + room]
        over = window * np.arange(1, len(window) + 1) > max_tokens
        end = start + (int(over.argmax()) if over.any() else len(window))
        end = max(end, start + 1)  # an example longer than max_tokens goes alone
        batches.append(order[start:end])
        start = end
    positions = list(range(len(batches)))
    rng.shuffle(positions)
    return [batches[i] for i in positions]
