"""Per-token features for tagging: a character CNN and a word-shape (casing) class.

Word embeddings are looked up lowercased (and with digits mapped to 0), so these two carry what
the lowercasing drops: capitalisation, affixes, and a representation for rare and unseen words
(Ma & Hovy 2016, sec. 2.1; Chiu & Nichols 2016, sec. 2.3 for the casing feature).
"""
from __future__ import annotations

import torch
from torch import nn

CASES = ("pad", "lower", "upper", "title", "mixed", "numeric", "has_digit", "punct", "other")
MAX_WORD_CHARS = 30  # longer tokens contribute only their first 15 and last 15 characters


def case_id(token: str) -> int:
    """Index into CASES of the token's shape."""
    if token.isdigit() or token.replace(",", "").replace(".", "").isdigit():
        return CASES.index("numeric")
    if any(c.isdigit() for c in token):
        return CASES.index("has_digit")
    if not any(c.isalpha() for c in token):
        return CASES.index("punct") if token else CASES.index("other")
    letters = [c for c in token if c.isalpha()]
    if all(c.islower() for c in letters):
        return CASES.index("lower")
    if all(c.isupper() for c in letters):
        return CASES.index("upper")
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return CASES.index("title")
    return CASES.index("mixed")


def clip_word(token: str) -> str:
    half = MAX_WORD_CHARS // 2
    return token if len(token) <= MAX_WORD_CHARS else token[:half] + token[-half:]


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
