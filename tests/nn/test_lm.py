"""The neighbour-word language-model side objective (s2s.nn.lm) over a bidirectional Encoder's states."""
from __future__ import annotations

import pytest
import torch

from s2s.nn.encoder import Encoder
from s2s.nn.lm import NeighbourWordLM

WORDS = {w: i for i, w in enumerate(["<pad>", "<unk>", "alan", "shearer", "visited", "paris", ".", "italy", "now", "!", "ann", "lee", "left"])}


def _tiny(device: torch.device) -> tuple[Encoder, NeighbourWordLM]:
    torch.manual_seed(0)
    encoder, lm = Encoder(len(WORDS), 8, 8, num_layers=1, bidirectional=True), NeighbourWordLM(8, 5)
    return encoder.eval().to(device), lm.eval().to(device)


def _encode(encoder: Encoder, sentences: list[list[str]]) -> torch.Tensor:
    """Encoder states (B, T, 2H) of padded sentences."""
    t = max(map(len, sentences))
    ids = torch.tensor([[WORDS[w] for w in s] + [0] * (t - len(s)) for s in sentences])
    return encoder(ids.to(encoder.embed.weight.device), torch.tensor([len(s) for s in sentences])).states


def test_language_model_objective_sees_only_its_side(device):
    """The next-word scores at a token come from the forward states, which have not seen the words after it;
    the previous-word scores from the backward states, which have not seen the words before it."""
    encoder, lm = _tiny(device)
    words = ["alan", "shearer", "visited", "paris", "."]
    with torch.no_grad():
        base = lm.logits(_encode(encoder, [words]))
        later = lm.logits(_encode(encoder, [words[:2] + ["italy", "now", "!"]]))
        earlier = lm.logits(_encode(encoder, [["ann", "lee", "left"] + words[3:]]))
    assert torch.allclose(later[0][0, :2], base[0][0, :2]) and not torch.allclose(later[0][0, 2:], base[0][0, 2:])
    assert torch.allclose(earlier[1][0, 3:], base[1][0, 3:]) and not torch.allclose(earlier[1][0, :3], base[1][0, :3])


def test_language_model_objective_ignores_padding(device):
    encoder, lm = _tiny(device)
    short, long = [["paris", "."]], [["alan", "shearer", "visited", "paris", "."]]
    targets = {2: [1, 2], 5: [3, 4, 0, 1, 2]}

    def lm_loss(sentences, rows):
        with torch.no_grad():
            return lm(_encode(encoder, sentences), torch.tensor(rows, device=device)).item()

    alone = lm_loss(short, [targets[2]]) + lm_loss(long, [targets[5]])
    together = lm_loss(short + long, [targets[2] + [-100] * 3, targets[5]])
    assert together == pytest.approx(alone, rel=1e-5)
