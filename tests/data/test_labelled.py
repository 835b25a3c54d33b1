"""Labelled text for classification: JSONL, TSV and CSV read to the same examples, every bad row named by
file and line, and the seeded dev hold-out."""
from __future__ import annotations

import json
from pathlib import Path

import random

import pytest

from s2s.data.labelled import hold_out_order, read_labelled
from s2s.errors import S2SError


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_tsv_and_csv_give_the_same_examples(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "\"fine\", quoted", "label": 1}, {"text": "two\nlines", "label": "neg"}])
    (tmp_path / "a.csv").write_text('text,label\n"""fine"", quoted",1\n"two\nlines",neg\n\n', encoding="utf-8")
    (tmp_path / "a.tsv").write_text('label\ttext\n1\t"fine", quoted\nneg\ttwo\\nlines\n', encoding="utf-8")  # TSV cells are literal
    found = [[(e.text, e.label) for e in read_labelled(tmp_path / f"a.{fmt}", fmt)] for fmt in ("jsonl", "csv", "tsv")]
    assert found[0] == found[1] == [('"fine", quoted', "1"), ("two\nlines", "neg")]
    assert found[2] == [('"fine", quoted', "1"), ("two\\nlines", "neg")]


def test_a_unicode_line_separator_inside_a_text_is_not_a_line_break(tmp_path):
    # IMDB's train.jsonl holds \x85 inside reviews; str.splitlines() would cut those lines in two.
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "one\x85two\u2028three", "label": "x"}, {"text": "b", "label": "y"}])
    assert [e.line for e in read_labelled(path, "jsonl")] == [1, 2]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("a.jsonl", '{"text": "ok", "label": 1}\n{"text": "broken", label}\n', r"a\.jsonl:2: not valid JSON"),
        ("a.jsonl", '{"text": "ok", "label": 1}\n\n[1, 2]\n', r"a\.jsonl:3: expected a JSON object"),
        ("a.jsonl", '{"text": "ok", "label": 1}\n{"text": "no label"}\n', r"a\.jsonl:2: no label in 'label'; keys: text"),
        ("a.jsonl", '{"text": "ok", "label": null}\n', r"a\.jsonl:1: no label in 'label', got None"),
        ("a.jsonl", '{"review": "ok", "label": 1}\n', r"a\.jsonl:1: no text in 'text'; keys: review, label"),
        ("a.jsonl", '{"text": "  ", "label": 1}\n', r"a\.jsonl:1: no text in 'text'"),
        ("a.tsv", "text\tlabel\nok\t1\nno label here\n", r"a\.tsv:3: expected 2 TSV fields \(text, label\), got 1"),
        ("a.csv", 'text,label\nok,1\n"unclosed,1\n', r"a\.csv:\d+: not a valid CSV row"),
        ("a.csv", "text,label\nok,\n", r"a\.csv:2: no label in 'label', got ''"),
        ("a.jsonl", "", r"a\.jsonl: no labelled rows"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(S2SError, match=message):
        read_labelled(path, name.split(".")[1])


def test_non_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": "ok", "label": 1}\n{"text": "caf\xe9", "label": 1}\n')
    with pytest.raises(S2SError, match=r"a\.jsonl:2: not valid UTF-8 \(byte 0xe9\)"):
        read_labelled(path, "jsonl")


def test_dev_hold_out_is_seeded_and_a_permutation():
    order = list(hold_out_order(100, 10, seed=5, where="x"))
    assert sorted(order) == list(range(100)) and order != list(range(100))
    # The split never moves: the order of random.shuffle, as s2s 0.2.0 held rows out.
    expected = list(range(100))
    random.Random(5).shuffle(expected)
    assert order == expected and list(hold_out_order(100, 10, seed=6, where="x"))[:10] != order[:10]
    with pytest.raises(S2SError, match="data.dev_size=100"):
        hold_out_order(100, 100, seed=5, where="x")
