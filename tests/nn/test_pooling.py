"""Pooling encoder states into one vector per text (s2s.nn.pooling), through the classifier head that uses it,
and the max-pooling of the encoder's conv front end: padding never changes a result."""
from __future__ import annotations

import random

import pytest
import torch

from s2s import config as config_lib
from s2s.nn.encoder import Encoder
from s2s.nn.pooling import POOLINGS
from s2s.tasks.classification import build_model, make_batch


def _model(cell="lstm", pooling="max+mean", bidirectional=True, conv=0, seed=0):
    config = config_lib.from_dict({
        "task": "classification",
        "encoder": {"cell": cell, "emb_dim": 8, "hidden_size": 6, "bidirectional": bidirectional, "dropout": 0.0,
                    "conv_filters": conv, "conv_kernel": 3, "conv_pool": 2},
        "classification": {"pooling": pooling, "attn_size": 5},
        "train": {"label_smoothing": 0.0},
    })
    torch.manual_seed(seed)
    return build_model(config, 20, 3)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("pooling", [*POOLINGS, "attention+max"])
def test_padding_never_changes_the_output(cell, pooling, device):
    rng = random.Random(0)
    texts = [[rng.randrange(2, 20) for _ in range(n)] for n in (7, 1, 4, 6, 2)]
    for bidirectional in (True, False):
        for conv in (0, 4):
            model = _model(cell, pooling, bidirectional, conv).eval().to(device)
            b = make_batch(texts).to(device)
            together = model.logits(b.tokens, b.lengths)
            for i, text in enumerate(texts):
                alone = make_batch([text]).to(device)
                assert torch.allclose(model.logits(alone.tokens, alone.lengths)[0], together[i], atol=1e-5), (bidirectional, conv, i)


def test_conv_front_end_pools_the_lengths(device):
    encoder = Encoder(20, 8, 6, conv_filters=4, conv_kernel=3, conv_pool=2).to(device)
    enc = encoder(torch.tensor([[2, 3, 4, 5, 6], [7, 8, 0, 0, 0]], device=device), torch.tensor([5, 2]))
    assert enc.states.shape == (2, 3, 12) and enc.mask.tolist() == [[True] * 3, [True, False, False]]
