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


class BidirectionalLM(nn.Module):
    """Language-model heads for pretraining the shared encoder (Peters et al. 2017, TagLM; Dai & Le 2015): the
    forward-direction state at each token predicts the next token, the backward-direction state the previous one,
    each through an adaptive softmax (Grave et al. 2017, "Efficient softmax approximation for GPUs"), so a vocabulary
    of tens of thousands of words costs about a shortlist's softmax per token. The two directions never see the word
    they predict only with a one-layer bidirectional encoder (deeper layers read both directions)."""

    def __init__(self, hidden_size: int, vocab_size: int, shortlist: int = 2000, bidirectional: bool = True):
        super().__init__()
        self.hidden_size = hidden_size
        # Clusters: the shortlist in the head, then 4x as many words, then the rest (a small vocabulary: two halves);
        # each cluster further down gets half the projection size (div_value 2: hidden sizes here are small).
        cutoffs = [c for c in (shortlist, 5 * shortlist) if c < vocab_size - 1] or [max(1, vocab_size // 2)]
        self.next = nn.AdaptiveLogSoftmaxWithLoss(hidden_size, vocab_size, cutoffs, div_value=2.0)
        self.prev = nn.AdaptiveLogSoftmaxWithLoss(hidden_size, vocab_size, cutoffs, div_value=2.0) if bidirectional else None

    def forward(self, states: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Summed negative log-likelihoods of the next tokens and of the previous ones (0 without a backward
        direction), and how many tokens each direction predicted. states (B, T, D), tokens (B, T), mask (B, T) bool."""
        h = self.hidden_size
        pairs = mask[:, 1:] & mask[:, :-1]  # (B, T - 1): position t and t + 1 both real
        count = int(pairs.sum())
        # Forward half at t -> token t + 1.
        next_nll = -self.next(states[:, :-1, :h][pairs].float(), tokens[:, 1:][pairs]).output.sum()
        if self.prev is None:
            return next_nll, next_nll.new_zeros(()), count
        # Backward half at t + 1 -> token t.
        prev_nll = -self.prev(states[:, 1:, h:][pairs].float(), tokens[:, :-1][pairs]).output.sum()
        return next_nll, prev_nll, count
