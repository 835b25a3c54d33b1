"""Tag schemes: spans and conversions round-trip, invalid tags are found, allowed transitions, and tags
with slips are read as conlleval reads them (cross-checked against seqeval)."""
from __future__ import annotations

import itertools
import random

import pytest

from s2s.data.schemes import PREFIXES, SCHEMES, allowed_transitions, check_tags, convert, slips, spans, to_tags

# Span sets that exercise every scheme rule: adjacent entities of one type, of two types,
# single- and multi-token entities, entities at both ends of the sentence.
CASES = [
    ([], 3),
    ([(0, 1, "PER")], 1),
    ([(0, 2, "ORG"), (2, 3, "ORG"), (4, 7, "LOC")], 8),
    ([(1, 2, "PER"), (2, 4, "LOC"), (4, 5, "LOC"), (6, 7, "MISC")], 7),
]


@pytest.mark.parametrize("found,length", CASES)
def test_scheme_round_trips(found, length):
    for scheme in SCHEMES:
        tags = to_tags(found, length, scheme)
        assert check_tags(tags, scheme) is None, (scheme, tags)
        assert spans(tags, scheme) == found
    for a, b in itertools.permutations(SCHEMES, 2):
        tags = to_tags(found, length, a)
        assert convert(convert(tags, a, b), b, a) == tags
        assert convert(tags, a, b) == to_tags(found, length, b)


def test_iob1_uses_b_only_between_same_type_entities():
    assert to_tags([(0, 1, "LOC"), (1, 2, "LOC"), (2, 3, "PER")], 3, "iob1") == ["I-LOC", "B-LOC", "I-PER"]
    assert to_tags([(0, 1, "LOC"), (1, 2, "LOC")], 2, "iob2") == ["B-LOC", "B-LOC"]
    assert to_tags([(0, 1, "LOC"), (1, 3, "LOC")], 3, "bioes") == ["S-LOC", "B-LOC", "E-LOC"]


@pytest.mark.parametrize(
    "scheme,tags,bad,reason",
    [
        ("iob1", ["O", "B-PER"], 1, "B- only follows"),
        ("iob1", ["I-PER", "E-PER"], 1, "not IOB1"),
        ("iob2", ["O", "I-PER"], 1, "must follow B-PER"),
        ("iob2", ["B-PER", "I-LOC"], 1, "must follow B-LOC"),
        ("iob2", ["B-PER", "PER"], 1, "not IOB2"),
        ("bioes", ["B-PER", "O"], 1, "must end with E-PER"),
        ("bioes", ["O", "E-PER"], 1, "must follow"),
        ("bioes", ["B-PER", "I-PER"], 1, "not closed"),
        ("bioes", ["S-PER", "x"], 1, "not BIOES"),
    ],
)
def test_invalid_tags_are_found(scheme, tags, bad, reason):
    position, message = check_tags(tags, scheme)
    assert position == bad and reason in message


def test_iob2_transitions():
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    trans, start, end = allowed_transitions(tags, "iob2")
    assert not start[2] and start[1] and all(end)
    assert not trans[0][2] and not trans[3][2] and trans[1][2] and trans[2][2] and trans[2][3]


@pytest.mark.parametrize("scheme", ["iob2", "iob1", "bioes"])
def test_spans_of_tags_with_slips_equal_seqeval_get_entities(scheme):
    """Random tags of the scheme's alphabet, most with slips (an I-X after O, E-LOC after B-PER, ...):
    the spans are the entities seqeval's get_entities reads, which reads tags as conlleval does;
    convert() writes the same spans as valid tags."""
    from seqeval.metrics.sequence_labeling import get_entities

    rng = random.Random(0)
    alphabet = ["O"] + [f"{p}-{kind}" for p in PREFIXES[scheme] for kind in ("PER", "LOC", "ORG")]
    with_slips = 0
    for _ in range(2000):
        tags = [rng.choice(alphabet) for _ in range(rng.randint(1, 9))]
        with_slips += bool(slips(tags, scheme))
        expected = [(start, end + 1, kind) for kind, start, end in get_entities(tags)]  # seqeval: end inclusive
        assert spans(tags, scheme) == expected, tags
        for target in SCHEMES:
            repaired = convert(tags, scheme, target)
            assert check_tags(repaired, target) is None and spans(repaired, target) == expected, (tags, target)
    assert with_slips > 1000  # the slips were exercised
