"""Pooling a sequence of encoder states into one vector."""
from __future__ import annotations

import torch
from torch import nn

from s2s.nn.encoder import EncoderOutput

POOLINGS = ("mean", "max", "last", "attention")


class AttentionPooling(nn.Module):
    """A learned weighted average of the states: score_t = v . tanh(W h_t), weights = softmax over
    the real positions (Yang et al. 2016, sec. 2.2, with one learned query; Lin et al. 2017)."""

    def __init__(self, input_size: int, attn_size: int):
        super().__init__()
        self.proj = nn.Linear(input_size, attn_size)
        self.v = nn.Linear(attn_size, 1, bias=False)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """states (B, T, D), mask (B, T) -> (B, D)."""
        scores = self.v(torch.tanh(self.proj(states))).squeeze(-1)  # (B, T)
        weights = scores.float().masked_fill(~mask, -torch.inf).softmax(-1).to(states.dtype)  # (B, T), 0 on padding
        return torch.bmm(weights.unsqueeze(1), states).squeeze(1)  # (B, D)


def pool(mode: str, enc: EncoderOutput, attention: AttentionPooling | None = None) -> torch.Tensor:
    """One of POOLINGS over enc.states (B, T, D), which are 0 on padding -> (B, D)."""
    states, mask = enc.states, enc.mask
    match mode:
        case "mean":
            return states.sum(1) / mask.sum(1, keepdim=True).to(states.dtype)
        case "max":
            return states.masked_fill(~mask.unsqueeze(-1), -torch.inf).amax(1)
        case "last":
            return enc.final  # last forward state + first backward state
        case "attention":
            return attention(states, mask)
    raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {mode!r}")
