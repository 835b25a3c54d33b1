"""CoNLL reading and writing: round trips, documents, tag slips read as conlleval reads them, and errors with file:line."""
from __future__ import annotations

import logging

import pytest

from s2s.data.conll import format_conll, parse_conll, read_conll, write_conll
from s2s.data.schemes import spans
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


def test_malformed_files_fail_with_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("-DOCSTART- O\n\nAlan B-PER\nShearer I-LOC\n", encoding="utf-8")
    with pytest.raises(S2SError, match=r"bad\.txt:4: tag 'I-LOC': in IOB2, I-LOC must follow B-LOC"):
        read_conll(path, "iob2", strict=True)
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


def test_conll_reader_numbers_documents(tmp_path):
    path = tmp_path / "docs.txt"
    docstart = "-DOCSTART- -X- O\n\n"
    path.write_text(docstart + "A NN I-PER\n\nB NN O\n\n" + docstart + docstart + "C NN O\n\nD NN O\n", encoding="utf-8")
    assert [s.doc for s in read_conll(path)] == [0, 0, 1, 1]
    path.write_text("A NN I-PER\n\n" + docstart + "B NN O\n", encoding="utf-8")
    assert [s.doc for s in read_conll(path)] == [0, 1]


def _slip_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "s2s.data.conll" and r.levelno == logging.WARNING]


def test_tag_slips_are_read_as_conlleval_reads_them_with_one_warning(tmp_path, caplog):
    """An I-X that cannot continue an entity starts one (conlleval, seqeval's get_entities); the tags stay
    as written, and the file gets one warning with the number of slips and the first one's line."""
    path = tmp_path / "slips.txt"
    path.write_text("-DOCSTART- O\n\nAlan O\nShearer I-PER\nLee I-PER\n\nParis I-LOC\n\nRome B-LOC\nrains O\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="s2s.data.conll"):
        sentences = read_conll(path, "iob2")
    assert [s.tags for s in sentences] == [["O", "I-PER", "I-PER"], ["I-LOC"], ["B-LOC", "O"]]
    assert [spans(s.tags, "iob2") for s in sentences] == [[(1, 3, "PER")], [(0, 1, "LOC")], [(0, 1, "LOC")]]
    warnings = _slip_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "slips.txt" in warnings[0] and "2 tag slips" in warnings[0] and "line 4" in warnings[0] and "'I-PER'" in warnings[0]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="s2s.data.conll"):
        (bioes,) = parse_conll(["Alan B-PER", "Paris E-LOC"], "bioes")
    assert spans(bioes.tags, "bioes") == [(0, 1, "PER"), (1, 2, "LOC")]
    warnings = _slip_warnings(caplog)
    assert len(warnings) == 1 and "<input>" in warnings[0] and "1 tag slip " in warnings[0] and "line 2" in warnings[0], warnings

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="s2s.data.conll"):
        parse_conll(["Alan O", "Shearer I-PER", "Lee I-PER", "", "Paris I-LOC"], "iob1")  # valid IOB1
    assert _slip_warnings(caplog) == []


def test_strict_refuses_the_first_slip_with_file_and_line(tmp_path):
    path = tmp_path / "slips.txt"
    path.write_text("-DOCSTART- O\n\nAlan O\nShearer I-PER\nLee I-PER\n\nParis I-LOC\n", encoding="utf-8")
    with pytest.raises(S2SError, match=r"slips\.txt:4: tag 'I-PER': in IOB2, I-PER must follow B-PER or I-PER"):
        read_conll(path, "iob2", strict=True)
    with pytest.raises(S2SError, match=r"<input>:2: tag 'E-LOC': in BIOES, E-LOC must follow B-LOC or I-LOC"):
        parse_conll(["Alan B-PER", "Paris E-LOC"], "bioes", strict=True)


@pytest.mark.parametrize("tag", ["X-PER", "E-PER", "PER", "B-"])
def test_tags_outside_the_scheme_fail_without_strict(tmp_path, tag):
    path = tmp_path / "bad.txt"
    path.write_text(f"Alan B-PER\n\nShearer O\nLee {tag}\n", encoding="utf-8")
    with pytest.raises(S2SError, match=rf"bad\.txt:4: tag '{tag}' is not IOB2"):
        read_conll(path, "iob2")
