"""CoNLL reading and writing, tag schemes and their conversions, and errors with file:line."""
from __future__ import annotations

import itertools

import pytest

from s2s.conll import (
    SCHEMES, check_tags, convert, format_conll, parse_conll, read_conll, span_scores, spans, to_tags, write_conll,
)
from s2s.errors import S2SError

SAMPLE = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
. . O O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

In IN B-PP O
Italy NNP B-NP I-LOC
Lazio NNP B-NP B-LOC
beat VBD B-VP O
"""

# Span sets that exercise every scheme rule: adjacent entities of one type, of two types,
# single- and multi-token entities, entities at both ends of the sentence.
CASES = [
    ([], 3),
    ([(0, 1, "PER")], 1),
    ([(0, 2, "ORG"), (2, 3, "ORG"), (4, 7, "LOC")], 8),
    ([(1, 2, "PER"), (2, 4, "LOC"), (4, 5, "LOC"), (6, 7, "MISC")], 7),
]


def test_read_write_round_trip(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text(SAMPLE, encoding="utf-8")
    sentences = read_conll(path, "iob1")
    assert [s.tokens for s in sentences] == [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"], ["In", "Italy", "Lazio", "beat"]]
    assert sentences[0].columns[0] == ["NNP", "B-NP"] and sentences[0].line == 3
    write_conll(sentences, tmp_path / "out.txt")
    again = read_conll(tmp_path / "out.txt", "iob1")
    assert [(s.tokens, s.tags, s.columns) for s in again] == [(s.tokens, s.tags, s.columns) for s in sentences]
    # Without the -DOCSTART- lines, the text is the same.
    body = [line for line in SAMPLE.splitlines() if not line.startswith("-DOCSTART-")]
    assert "\n".join(format_conll(sentences)).split() == "\n".join(body).split()
    assert spans(sentences[2].tags, "iob1") == [(1, 2, "LOC"), (2, 3, "LOC")]


def test_two_column_files_and_untagged_input():
    sentences = parse_conll(["Alan B-PER", "Shearer I-PER", "", "ran O"], "iob2")
    assert spans(sentences[0].tags, "iob2") == [(0, 2, "PER")] and sentences[1].tags == ["O"]
    untagged = parse_conll(["Alan", "Shearer", "", "", "ran"], tagged=False)
    assert [s.tokens for s in untagged] == [["Alan", "Shearer"], ["ran"]]


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


def test_malformed_files_fail_with_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("-DOCSTART- O\n\nAlan B-PER\nShearer I-LOC\n", encoding="utf-8")
    with pytest.raises(S2SError, match=r"bad\.txt:4: tag 'I-LOC': in IOB2, I-LOC must follow B-LOC"):
        read_conll(path, "iob2")
    path.write_text("Alan NNP I-PER\nShearer\n", encoding="utf-8")
    with pytest.raises(S2SError, match=r"bad\.txt:2: expected 2 to 4 columns"):
        read_conll(path, "iob1")
    path.write_text("Alan NNP I-PER\nShearer I-PER\n", encoding="utf-8")
    with pytest.raises(S2SError, match=r"bad\.txt:2: expected 3 columns"):
        read_conll(path, "iob1")
    path.write_text("a b c d e\n", encoding="utf-8")
    with pytest.raises(S2SError, match=r"bad\.txt:1: expected 2 to 4 columns .* got 5"):
        read_conll(path, "iob1")
    with pytest.raises(S2SError, match=r"nope\.txt: no such file"):
        read_conll(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    assert read_conll(tmp_path / "empty.txt") == []


def test_span_scores_count_exact_matches_only():
    gold = [[(0, 2, "PER"), (3, 4, "LOC")], [(1, 2, "ORG")]]
    pred = [[(0, 1, "PER"), (3, 4, "LOC")], [(1, 2, "LOC")]]
    s = span_scores(gold, pred)
    assert (s["micro"]["correct"], s["micro"]["predicted"], s["micro"]["gold"]) == (1, 3, 3)
    assert s["types"]["LOC"]["precision"] == 50.0 and s["types"]["PER"]["recall"] == 0.0
    assert s["types"]["ORG"]["f1"] == 0.0 and s["micro"]["f1"] == pytest.approx(100 / 3)
