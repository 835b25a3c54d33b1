"""A character CNN: a word's features from its characters (Ma & Hovy 2016, sec. 2.1), for tagging."""
from __future__ import annotations

import torch
from torch import nn


class CharCNN(nn.Module):
    """Character embeddings -> 1-D convolution -> max over the word (Ma & Hovy 2016, fig. 1)."""

    def __init__(self, num_chars: int, char_emb_dim: int, filters: int, kernel_size: int = 3, dropout: float = 0.0, pad_id: int = 0):
        super().__init__()
        self.embed = nn.Embedding(num_chars, char_emb_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv1d(char_emb_dim, filters, kernel_size, padding=kernel_size // 2)
        self.pad_id = pad_id
        self.output_size = filters

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        """chars (B, T, C) padded character ids -> (B, T, F)."""
        b, t, c = chars.shape
        flat = chars.view(b * t, c)
        real = flat[:, 0] != self.pad_id  # (B*T,) real tokens; padded tokens get zeros, at no cost
        words = flat[real]  # (N, C)
        x = self.dropout(self.embed(words)).transpose(1, 2)  # (N, E, C)
        h = self.conv(x)  # (N, F, C)
        h = h.masked_fill((words == self.pad_id).unsqueeze(1), -1e4)  # padding never wins the max
        out = h.new_zeros(b * t, self.output_size)
        out[real] = h.max(dim=2).values  # (N, F)
        return out.view(b, t, -1)
