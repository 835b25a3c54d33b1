"""Per-token features for tagging beyond the lowercased word: its shape class and its characters.

Word embeddings are looked up lowercased (and with digits mapped to 0), so these carry what the
lowercasing drops: capitalisation, affixes, and something for rare and unseen words
(Ma & Hovy 2016, sec. 2.1; Chiu & Nichols 2016, sec. 2.3 for the casing feature).
"""
from __future__ import annotations

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
