"""Word tokenizers (s2s.data.tokenize): the tagging tokenizer keeps character offsets; classification's word
tokens, and how a long text is cut (truncate)."""
from __future__ import annotations

from s2s.data.tokenize import text_tokens, tokenize, truncate


def test_tokenize_keeps_offsets():
    text = "Mr. Smith of the U.S. paid $3,000.50 to Hewlett-Packard's O'Neill (Paris)."
    tokens, offsets = tokenize(text)
    assert [text[s:e] for s, e in offsets] == tokens
    assert {"U.S.", "3,000.50", "Hewlett-Packard's", "O'Neill", "("} <= set(tokens)
    assert tokenize("") == ([], []) and tokenize("   ") == ([], [])


def test_text_tokens_strip_html_breaks_and_keep_contractions():
    assert text_tokens("Great<br /><br />I DON'T like it!!") == ["great", "i", "don't", "like", "it", "!", "!"]
    assert text_tokens("Great", lowercase=False) == ["Great"] and text_tokens("<br/>") == []


def test_truncate_keeps_head_tail_or_both():
    tokens = [str(i) for i in range(20)]
    assert truncate(tokens, 8, "head") == tokens[:8]
    assert truncate(tokens, 8, "tail") == tokens[-8:]
    assert truncate(tokens, 8, "head_tail") == tokens[:2] + tokens[-6:]  # a quarter of the budget from the head
    assert truncate(tokens, 30, "head_tail") == tokens and truncate(tokens, 0) == tokens
