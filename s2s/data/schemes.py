"""Tag schemes for entity spans: validation, slip repair, spans, conversion and allowed transitions.

Schemes (Ramshaw & Marcus 1995; Tjong Kim Sang & Veenstra 1999):
    IOB1   I-X inside an entity; B-X only starts an entity that directly follows one of the same type
           (the original CoNLL-2003 files)
    IOB2   B-X starts every entity, I-X continues it
    BIOES  B-X begins, I-X continues, E-X ends a multi-token entity; S-X is a single-token entity
Every reader converts tags to spans; the schemes differ only in how spans are written.

A "slip" is a tag that breaks its scheme's order but not its alphabet, such as an I-X after O in
IOB2. `spans` reads slips as conlleval does (a tag that cannot continue an entity starts one), so
the spans of tags with slips are what conlleval would score.
"""
from __future__ import annotations

SCHEMES = ("iob1", "iob2", "bioes")
PREFIXES = {"iob1": "IB", "iob2": "IB", "bioes": "BIES"}

# A span is (start, end, type) over token positions, end exclusive.
Span = tuple[int, int, str]


def split_tag(tag: str) -> tuple[str, str]:
    """('B', 'PER') for 'B-PER', ('O', '') for 'O', ('?', '') for anything else."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or len(prefix) != 1 or not kind:
        return "?", ""
    return prefix, kind


def bad_tag(tags: list[str], scheme: str) -> tuple[int, str] | None:
    """The first (position, reason) of a tag outside the scheme's alphabet (never repaired), or None."""
    for i, tag in enumerate(tags):
        p, _ = split_tag(tag)
        if p == "?" or (p != "O" and p not in PREFIXES[scheme]):
            valid = ", ".join(f"{c}-TYPE" for c in PREFIXES[scheme])
            return i, f"tag {tag!r} is not {scheme.upper()} (valid: O, {valid})"
    return None


def slips(tags: list[str], scheme: str) -> list[tuple[int, str]]:
    """Every (position, reason) where tags of the scheme's alphabet break its order."""
    found = []
    prev_p, prev_k = "O", ""
    for i, tag in enumerate(tags):
        p, k = split_tag(tag)
        inside = prev_p != "O" and prev_k == k  # the previous token is in an entity of this type
        if scheme == "iob1" and p == "B" and not inside:
            found.append((i, f"tag {tag!r}: in IOB1, B- only follows an entity of the same type"))
        if scheme == "iob2" and p == "I" and not (inside and prev_p in "BI"):
            found.append((i, f"tag {tag!r}: in IOB2, I-{k} must follow B-{k} or I-{k}"))
        if scheme == "bioes":
            open_ = prev_p in "BI"  # an entity is open and must continue with I- or E- of its type
            if p in "IE" and not (open_ and prev_k == k):
                found.append((i, f"tag {tag!r}: in BIOES, {p}-{k} must follow B-{k} or I-{k}"))
            elif p in "BSO" and open_:
                found.append((i, f"tag {tag!r}: in BIOES, the entity opened by {prev_p}-{prev_k} must end with E-{prev_k}"))
        prev_p, prev_k = p, k
    if scheme == "bioes" and prev_p in "BI":
        found.append((len(tags) - 1, f"sentence ends inside an entity ({prev_p}-{prev_k} is not closed by E-{prev_k})"))
    return found


def check_tags(tags: list[str], scheme: str) -> tuple[int, str] | None:
    """The first (position, reason) where `tags` break `scheme`, or None when they are valid."""
    bad = bad_tag(tags, scheme) or next(iter(slips(tags, scheme)), None)
    return bad


def spans(tags: list[str], scheme: str) -> list[Span]:
    """Entity spans of tags of the scheme's alphabet; slips are read as conlleval reads them."""
    out: list[Span] = []
    start, kind = -1, ""
    for i, tag in enumerate(tags):
        p, k = split_tag(tag)
        begins = p in "BS" or (p == "I" and (start < 0 or k != kind))  # IOB1: I- after O or another type
        if start >= 0 and (p == "O" or begins or k != kind):
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
    """Rewrite `tags` from one scheme to another (slips come out repaired)."""
    return to_tags(spans(tags, source), len(tags), target)


def allowed_transitions(tags: list[str], scheme: str) -> tuple[list[list[bool]], list[bool], list[bool]]:
    """(trans [i][j]: tag i may precede tag j, start [j]: tag j may begin a sentence, end [j]: may end one)."""
    parts = [split_tag(t) for t in tags]
    trans = [[False] * len(tags) for _ in tags]
    start, end = [False] * len(tags), [False] * len(tags)
    for j, (p, kind) in enumerate(parts):
        if scheme == "bioes":
            start[j] = p in "OBS"
            end[j] = p in "OES"
        else:  # iob2; also used for iob1 decoding, which reads I- after O as a start
            start[j] = p in "OB" or scheme == "iob1"
            end[j] = True
        for i, (q, prev) in enumerate(parts):
            if scheme == "bioes":
                ok = (p in "IE" and prev == kind) if q in "BI" else p in "OBS"
            elif scheme == "iob2":
                ok = p != "I" or (q in "BI" and prev == kind)
            else:  # iob1: B- only right after the same type
                ok = p != "B" or (q in "BI" and prev == kind)
            trans[i][j] = ok
    return trans, start, end
