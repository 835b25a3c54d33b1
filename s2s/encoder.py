"""The shared encoder: token embeddings + a (bi)directional RNN. Every head builds on this class."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class EncoderOutput(NamedTuple):
    states: torch.Tensor  # (B, T, D) top-layer states, D = hidden_size * directions; zero on padding
    mask: torch.Tensor  # (B, T) bool, True = real token
    final: torch.Tensor  # (B, D) top layer's last forward state joined with its first backward state


class Encoder(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        emb_dim: int,
        hidden_size: int,
        num_layers: int = 1,
        cell: str = "lstm",
        dropout: float = 0.0,
        bidirectional: bool = True,
        pad_id: int = 0,
        feature_dim: int = 0,
    ):
        """feature_dim > 0 lets a head join extra per-token features (e.g. character
        features for tagging) to the word embeddings before the RNN."""
        super().__init__()
        self.embed = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.rnn = CELLS[cell](
            emb_dim + feature_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.num_directions = 2 if bidirectional else 1
        self.output_size = hidden_size * self.num_directions

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor, features: torch.Tensor | None = None
    ) -> EncoderOutput:
        """tokens (B, T) padded ids; lengths (B,) >= 1; features (B, T, F) or None."""
        x = self.embed(tokens)  # (B, T, E)
        if features is not None:
            x = torch.cat([x, features], dim=-1)  # (B, T, E + F)
        x = self.dropout(x)
        # Packing makes padding cost nothing and keeps it out of the backward direction.
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, hidden = self.rnn(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.size(1))  # (B, T, D)
        h = hidden[0] if isinstance(hidden, tuple) else hidden  # (layers * dirs, B, H)
        final = torch.cat(list(h[-self.num_directions:]), dim=-1)  # (B, D)
        mask = torch.arange(tokens.size(1), device=tokens.device)[None, :] < lengths.to(tokens.device)[:, None]
        return EncoderOutput(self.dropout(states), mask, final)
