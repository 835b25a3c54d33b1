"""Word tokenizers (s2s.data.tokenize): the tagging tokenizer keeps character offsets."""
from __future__ import annotations

from s2s.data.tokenize import tokenize


def test_tokenize_keeps_offsets():
    text = "Mr. Smith of the U.S. paid $3,000.50 to Hewlett-Packard's O'Neill (Paris)."
    tokens, offsets = tokenize(text)
    assert [text[s:e] for s, e in offsets] == tokens
    assert {"U.S.", "3,000.50", "Hewlett-Packard's", "O'Neill", "("} <= set(tokens)
    assert tokenize("") == ([], []) and tokenize("   ") == ([], [])
