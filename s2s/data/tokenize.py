"""The two word tokenizers (SentencePiece aside), and what is done to their tokens.

Tagging and `s2s vectors` use `tokenize`, which keeps character offsets so entities can be shown
in the raw text. Classification uses `text_tokens`, the simpler rule its trained vocabularies were
built with; changing either would change what existing models read.
"""
from __future__ import annotations

import re

# Abbreviations (U.S.), numbers (3,000.5), words with inner hyphens and apostrophes, any other character.
TOKEN_RE = re.compile(r"(?:[^\W\d_]\.){2,}|\d+(?:[.,:/]\d+)*|\w+(?:[-'’]\w+)*|\S", re.UNICODE)
# Words with inner apostrophes, single punctuation marks.
TEXT_TOKEN_RE = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]", re.UNICODE)
BREAK_RE = re.compile(r"<br\s*/?>", re.IGNORECASE)  # HTML line breaks, common in IMDB reviews


def tokenize(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Tokens of raw text and their (start, end) character offsets in it."""
    matches = list(TOKEN_RE.finditer(text))
    return [m.group() for m in matches], [m.span() for m in matches]


def normalize(word: str, lowercase: bool) -> str:
    """A tagging vocabulary's form of a word: lowercased with digits mapped to 0 (or as written)."""
    return re.sub(r"\d", "0", word.lower()) if lowercase else word


def text_tokens(text: str, lowercase: bool = True) -> list[str]:
    """Classification tokens: HTML breaks become spaces, then words and punctuation marks."""
    text = BREAK_RE.sub(" ", text)
    return TEXT_TOKEN_RE.findall(text.lower() if lowercase else text)


def truncate(tokens: list[str], budget: int, mode: str = "head_tail") -> list[str]:
    """At most `budget` tokens (0 = no limit): the head, the tail, or head_tail = the first quarter
    of the budget plus the last three quarters, since a review's verdict is often at its end
    (Sun et al. 2019, "How to Fine-Tune BERT for Text Classification", sec. 5.3.1)."""
    if not budget or len(tokens) <= budget:
        return tokens
    match mode:
        case "head":
            return tokens[:budget]
        case "tail":
            return tokens[-budget:]
    head = budget // 4
    return tokens[:head] + tokens[len(tokens) - (budget - head) :]
