"""A language-modelling side objective over a bidirectional encoder's states."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NeighbourWordLM(nn.Module):
    """A tagger's language-modelling side objective (Rei 2017, "Semi-supervised multitask learning for
    sequence labeling"): from its forward-direction state each token predicts the next word, from its
    backward-direction state the previous one, through a small tanh layer, among a shortlist of frequent
    training words (class 0: any other word). It makes the encoder learn how words follow each other in
    the training text, not only what separates the tags; it costs a small softmax per token in training
    and nothing when tagging."""

    def __init__(self, hidden_size: int, vocab_size: int, bottleneck: int = 50):
        super().__init__()
        self.hidden_size = hidden_size
        self.next = nn.Sequential(nn.Linear(hidden_size, bottleneck), nn.Tanh(), nn.Linear(bottleneck, vocab_size))
        self.prev = nn.Sequential(nn.Linear(hidden_size, bottleneck), nn.Tanh(), nn.Linear(bottleneck, vocab_size))

    def logits(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-word scores from the forward halves and previous-word scores from the backward halves
        of states (R, T, 2H): each (R, T, V)."""
        h = self.hidden_size
        return self.next(states[..., :h]), self.prev(states[..., h:])

    def forward(self, states: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy of both directions; words (R, T): each token's shortlist class, -100 on padding."""
        next_logits, prev_logits = self.logits(states)
        next_words = words[:, 1:]
        # A padding position's backward state (zeros) must not learn to predict the last real word.
        prev_words = words[:, :-1].masked_fill(words[:, 1:] < 0, -100)
        loss = F.cross_entropy(next_logits[:, :-1].flatten(0, 1).float(), next_words.flatten(), ignore_index=-100, reduction="sum")
        return loss + F.cross_entropy(prev_logits[:, 1:].flatten(0, 1).float(), prev_words.flatten(), ignore_index=-100, reduction="sum")
