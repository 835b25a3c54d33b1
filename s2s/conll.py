"""CoNLL files: reading, writing, tag schemes (IOB1, IOB2, BIOES) and exact span scoring.

A CoNLL file has one token per line, 2 to 4 space- or tab-separated columns
(token [POS [chunk]] tag), a blank line between sentences and `-DOCSTART-` lines
between documents. The tag is always the last column.

Schemes (Ramshaw & Marcus 1995; Tjong Kim Sang & Veenstra 1999):
    IOB1   I-X inside an entity; B-X only starts an entity that directly follows one of the same type
           (the original CoNLL-2003 files)
    IOB2   B-X starts every entity, I-X continues it
    BIOES  B-X begins, I-X continues, E-X ends a multi-token entity; S-X is a single-token entity
Every reader converts tags to spans; the schemes differ only in how spans are written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from s2s.data import read_lines
from s2s.errors import S2SError

SCHEMES = ("iob1", "iob2", "bioes")
PREFIXES = {"iob1": "IB", "iob2": "IB", "bioes": "BIES"}


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]  # in the scheme the sentence was read in
    columns: list[list[str]] = field(default_factory=list)  # middle columns (POS, chunk) per token, kept for writing
    line: int = 0  # 1-based line of the first token, for messages
    doc: int = 0  # which document of the file (-DOCSTART- lines separate them), for document context


# A span is (start, end, type) over token positions, end exclusive.
Span = tuple[int, int, str]


def _split_tag(tag: str) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or len(prefix) != 1 or not kind:
        return "?", ""
    return prefix, kind


def check_tags(tags: list[str], scheme: str) -> tuple[int, str] | None:
    """The first (position, reason) where `tags` break `scheme`, or None when they are valid."""
    prev_p, prev_k = "O", ""
    for i, tag in enumerate(tags):
        p, k = _split_tag(tag)
        if p == "?" or (p != "O" and p not in PREFIXES[scheme]):
            valid = ", ".join(f"{c}-TYPE" for c in PREFIXES[scheme])
            return i, f"tag {tag!r} is not {scheme.upper()} (valid: O, {valid})"
        inside = prev_p != "O" and prev_k == k  # the previous token is in an entity of this type
        if scheme == "iob1" and p == "B" and not inside:
            return i, f"tag {tag!r}: in IOB1, B- only follows an entity of the same type"
        if scheme == "iob2" and p == "I" and not (inside and prev_p in "BI"):
            return i, f"tag {tag!r}: in IOB2, I-{k} must follow B-{k} or I-{k}"
        if scheme == "bioes":
            open_ = prev_p in "BI"  # an entity is open and must continue with I- or E- of its type
            if p in "IE" and not (open_ and prev_k == k):
                return i, f"tag {tag!r}: in BIOES, {p}-{k} must follow B-{k} or I-{k}"
            if p in "BSO" and open_:
                return i, f"tag {tag!r}: in BIOES, the entity opened by {prev_p}-{prev_k} must end with E-{prev_k}"
        prev_p, prev_k = p, k
    if scheme == "bioes" and prev_p in "BI":
        return len(tags) - 1, f"sentence ends inside an entity ({prev_p}-{prev_k} is not closed by E-{prev_k})"
    return None


def spans(tags: list[str], scheme: str) -> list[Span]:
    """Entity spans of valid `tags` (see check_tags)."""
    out: list[Span] = []
    start, kind = -1, ""
    for i, tag in enumerate(tags):
        p, k = _split_tag(tag)
        begins = p in "BS" or (p == "I" and (start < 0 or k != kind))  # IOB1: I- after O or another type
        if start >= 0 and (p == "O" or begins):
            out.append((start, i, kind))
            start = -1
        if p != "O" and start < 0:
            start, kind = i, k
        if scheme == "bioes" and p in "ES" and start >= 0:
            out.append((start, i + 1, kind))
            start = -1
    if start >= 0:
        out.append((start, len(tags), kind))
    return out


def to_tags(spans_: list[Span], length: int, scheme: str) -> list[str]:
    """Write spans (sorted, not overlapping) as tags of `scheme`."""
    tags = ["O"] * length
    prev_end, prev_kind = -1, ""
    for start, end, kind in spans_:
        if scheme == "bioes":
            if end - start == 1:
                tags[start] = f"S-{kind}"
            else:
                tags[start] = f"B-{kind}"
                tags[start + 1 : end - 1] = [f"I-{kind}"] * (end - start - 2)
                tags[end - 1] = f"E-{kind}"
        else:
            tags[start:end] = [f"I-{kind}"] * (end - start)
            if scheme == "iob2" or (prev_end == start and prev_kind == kind):
                tags[start] = f"B-{kind}"
        prev_end, prev_kind = end, kind
    return tags


def convert(tags: list[str], source: str, target: str) -> list[str]:
    """Rewrite valid `tags` from one scheme to another."""
    return to_tags(spans(tags, source), len(tags), target)


def read_conll(path: str | Path, scheme: str = "iob1", tagged: bool = True) -> list[Sentence]:
    """Sentences of a CoNLL file, checked: every malformed line fails with file:line and why.
    tagged=False reads input to tag: 1 to 4 columns, the first is the token, tags are not read."""
    path = Path(path)
    if scheme not in SCHEMES:
        raise S2SError(f"unknown tag scheme {scheme!r}; valid: {', '.join(SCHEMES)}")
    return parse_conll(read_lines(path), scheme, str(path), tagged)


def parse_conll(lines: list[str], scheme: str = "iob1", where: str = "<input>", tagged: bool = True) -> list[Sentence]:
    sentences: list[Sentence] = []
    current: list[tuple[int, list[str]]] = []
    width = 0  # columns per line, fixed by the first token line of the file
    doc = 0

    def flush() -> None:
        if not current:
            return
        if not tagged:
            sentences.append(Sentence([c[0] for _, c in current], [], [], current[0][0], doc))
            current.clear()
            return
        tags = [cols[-1] for _, cols in current]
        bad = check_tags(tags, scheme)
        if bad is not None:
            i, reason = bad
            raise S2SError(f"{where}:{current[i][0]}: {reason}")
        sentences.append(
            Sentence([c[0] for _, c in current], tags, [c[1:-1] for _, c in current], current[0][0], doc)
        )
        current.clear()

    for number, raw in enumerate(lines, start=1):
        cols = raw.split()
        if not cols:
            flush()
            continue
        if cols[0] == "-DOCSTART-":
            flush()
            if sentences and sentences[-1].doc == doc:  # a new document, unless this one has no sentences yet
                doc += 1
            continue
        low = 2 if tagged else 1
        if not low <= len(cols) <= 4:
            what = "token ... tag" if tagged else "token first"
            raise S2SError(f"{where}:{number}: expected {low} to 4 columns ({what}), got {len(cols)}: {raw.strip()[:80]!r}")
        width = width or len(cols)
        if len(cols) != width:
            raise S2SError(f"{where}:{number}: expected {width} columns like the lines before, got {len(cols)}: {raw.strip()[:80]!r}")
        current.append((number, cols))
    flush()
    return sentences


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


def span_scores(gold: list[list[Span]], pred: list[list[Span]]) -> dict:
    """Entity precision, recall and F1 (percent), per type and micro-averaged, on exact
    (start, end, type) matches: what conlleval reports (Tjong Kim Sang & De Meulder 2003)."""
    counts: dict[str, list[int]] = {}  # type -> [correct, predicted, gold]
    for g, p in zip(gold, pred, strict=True):
        gs, ps = set(g), set(p)
        for _, _, kind in gs:
            counts.setdefault(kind, [0, 0, 0])[2] += 1
        for span in ps:
            c = counts.setdefault(span[2], [0, 0, 0])
            c[1] += 1
            c[0] += span in gs

    def prf(correct: int, predicted: int, gold_: int) -> dict:
        p = 100.0 * correct / predicted if predicted else 0.0
        r = 100.0 * correct / gold_ if gold_ else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return {"precision": p, "recall": r, "f1": f, "correct": correct, "predicted": predicted, "gold": gold_}

    total = [sum(c[i] for c in counts.values()) for i in range(3)]
    return {"micro": prf(*total), "types": {k: prf(*counts[k]) for k in sorted(counts)}}
