"""Padding and length-bucketed batches, shared by every task."""
from __future__ import annotations

import random

import torch


def pad(seqs: list[list[int]], value: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Id lists -> (B, T) tensor padded with `value` and (B,) lengths."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), int(lengths.max())), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out, lengths


def token_batches(lengths: list[int], max_tokens: int, seed: int, epoch: int) -> list[list[int]]:
    """Group example indices into batches of similar length, each with at most
    max_tokens padded tokens (batch size * longest example), in a shuffled order.

    The order depends only on (seed, epoch), so a resumed run sees the same batches.
    """
    rng = random.Random(seed * 100_003 + epoch)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = max(lengths[i], lengths[current[-1]] if current else 0)  # sorted: the newest is longest
        if current and longest * (len(current) + 1) > max_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches
