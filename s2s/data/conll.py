"""CoNLL files: reading (checked, with tag slips repaired or refused) and writing.

A CoNLL file has one token per line, 2 to 4 space- or tab-separated columns
(token [POS [chunk]] tag), a blank line between sentences and `-DOCSTART-` lines
between documents. The tag is always the last column. Lines end in LF or CR LF: a carriage return
anywhere else (a file with CR-only line ends) is refused. Tag schemes: s2s.data.schemes.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from s2s.data.io import iter_file_lines, refuse_carriage_returns
from s2s.data.schemes import SCHEMES, Span, bad_tag, slips, spans, to_tags
from s2s.errors import S2SError

log = logging.getLogger(__name__)


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]  # in the scheme the sentence was read in
    columns: list[list[str]] = field(default_factory=list)  # middle columns (POS, chunk) per token, kept for writing
    line: int = 0  # 1-based line of the first token, for messages
    doc: int = 0  # which document of the file (-DOCSTART- lines separate them), for document context


def read_conll(path: str | Path, scheme: str = "iob1", tagged: bool = True, strict: bool = False) -> list[Sentence]:
    """Sentences of a CoNLL file, checked: every malformed line fails with file:line and why.
    tagged=False reads input to tag: 1 to 4 columns, the first is the token, tags are not read.
    Tag slips (see s2s.data.schemes) are kept as written and read as conlleval reads them, with one
    warning for the file; strict=True refuses the first one instead."""
    return list(iter_conll(path, scheme, tagged, strict))


def iter_conll(path: str | Path, scheme: str = "iob1", tagged: bool = True, strict: bool = False, warn: bool = True) -> Iterator[Sentence]:
    """The sentences of read_conll one at a time, the file read as they are needed (constant memory);
    warn=False leaves out the warning about tag slips (a second pass over a file)."""
    if scheme not in SCHEMES:
        raise S2SError(f"unknown tag scheme {scheme!r}; valid: {', '.join(SCHEMES)}")
    return _sentences(enumerate(iter_file_lines(path), start=1), scheme, str(path), tagged, strict, 0, warn)


def parse_conll(lines: list[str], scheme: str = "iob1", where: str = "<input>", tagged: bool = True,
                strict: bool = False, first_line: int = 1, width: int = 0) -> list[Sentence]:
    """Sentences of CoNLL lines (see read_conll). A part of a longer input (s2s tag reads it in chunks) gives
    the number of its first line in `where` (for messages and Sentence.line) and the column count of the
    token lines before it (`width`, 0: fixed by its first token line)."""
    numbered = enumerate(refuse_carriage_returns(lines, where, first_line), start=first_line)
    return list(_sentences(numbered, scheme, where, tagged, strict, width))


def _sentences(numbered_lines, scheme: str, where: str, tagged: bool, strict: bool, width: int, warn: bool = True) -> Iterator[Sentence]:
    """Sentences of (line number, line) pairs, checked; one warning at the end for the tag slips read."""
    slipped: list[tuple[int, str]] = []  # (line, reason) of every tag slip
    current: list[tuple[int, list[str]]] = []
    doc, last_doc = 0, None  # the document of the sentences now; that of the last sentence made

    def sentence() -> Sentence:
        nonlocal last_doc
        last_doc = doc
        if not tagged:
            return Sentence([c[0] for _, c in current], [], [], current[0][0], doc)
        tags = [cols[-1] for _, cols in current]
        bad = bad_tag(tags, scheme)
        found = slips(tags, scheme) if bad is None else []
        if bad is None and found and strict:
            bad = found[0]
        if bad is not None:
            i, reason = bad
            raise S2SError(f"{where}:{current[i][0]}: {reason}")
        slipped.extend((current[i][0], reason) for i, reason in found)
        return Sentence([c[0] for _, c in current], tags, [c[1:-1] for _, c in current], current[0][0], doc)

    # split() would take a carriage return for a column separator and read two lines as one.
    for number, raw in numbered_lines:
        cols = raw.split()
        if not cols or cols[0] == "-DOCSTART-":
            if current:
                yield sentence()
                current = []
            if cols and last_doc == doc:  # a new document, unless this one has no sentences yet
                doc += 1
            continue
        low = 2 if tagged else 1
        if not low <= len(cols) <= 4:
            what = "token ... tag" if tagged else "token first"
            raise S2SError(f"{where}:{number}: expected {low} to 4 columns ({what}), got {len(cols)}: {raw.strip()[:80]!r}")
        width = width or len(cols)  # columns per line, fixed by the first token line of the file
        if len(cols) != width:
            raise S2SError(f"{where}:{number}: expected {width} columns like the lines before, got {len(cols)}: {raw.strip()[:80]!r}")
        current.append((number, cols))
    if current:
        yield sentence()
    if slipped and warn:
        line, reason = slipped[0]
        log.warning("%s: %d tag slip%s read as conlleval reads them (a tag that cannot continue an entity starts one); "
                    "first at line %d: %s. data.strict_tags: true refuses them", where, len(slipped),
                    "s" if len(slipped) > 1 else "", line, reason)


def format_conll(sentences: list[Sentence]) -> list[str]:
    """Lines of a CoNLL file (no -DOCSTART-), a blank line after each sentence."""
    lines: list[str] = []
    for s in sentences:
        for i, (token, tag) in enumerate(zip(s.tokens, s.tags)):
            middle = s.columns[i] if i < len(s.columns) else []
            lines.append(" ".join([token, *middle, tag]))
        lines.append("")
    return lines


def write_conll(sentences: list[Sentence], path: str | Path) -> None:
    Path(path).write_text("".join(line + "\n" for line in format_conll(sentences)), encoding="utf-8")


def gold_and_predicted(gold: list[Sentence], pred: list[list[Span]], scheme: str) -> list[str]:
    """conlleval's input: `token gold predicted` lines (both IOB2), a blank line after each sentence."""
    lines: list[str] = []
    for s, p in zip(gold, pred, strict=True):
        g = to_tags(spans(s.tags, scheme), len(s.tokens), "iob2")
        lines += [f"{t} {a} {b}" for t, a, b in zip(s.tokens, g, to_tags(p, len(s.tokens), "iob2"))] + [""]
    return lines
