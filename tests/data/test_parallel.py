"""Parallel text: aligned files, and splits read from text, TSV and JSONL files with the columns
named by the languages."""
from __future__ import annotations

import json

import pytest

from s2s.config import DataConfig
from s2s.data.parallel import describe, load_split, read_parallel
from s2s.errors import S2SError


def test_read_parallel_misaligned_names_both_files_and_counts(tmp_path):
    src, tgt = tmp_path / "train.de", tmp_path / "train.en"
    src.write_text("a\nb\nc\n", encoding="utf-8")
    tgt.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(S2SError) as e:
        read_parallel(src, tgt)
    message = str(e.value)
    assert f"{src} has 3 lines" in message and f"{tgt} has 2" in message


def test_read_parallel_aligned(tmp_path):
    src, tgt = tmp_path / "x.de", tmp_path / "x.en"
    src.write_text("a\n\nc\n", encoding="utf-8")
    tgt.write_text("A\nB\nC\n", encoding="utf-8")
    assert read_parallel(src, tgt) == (["a", "", "c"], ["A", "B", "C"])


# --- load_split: text, tsv, jsonl -----------------------------------------------------------------

PAIRS = [("ein Haus", "a house"), ("der Hund, bellt", "the dog, barks"), ("Katze", "cat")]


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    """Keep the datasets library's cache inside tmp_path."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return tmp_path


def _write_tsv(path, rows, header=("src", "tgt")):
    path.write_text("\t".join(header) + "\n" + "".join(f"{a}\t{b}\n" for a, b in rows), encoding="utf-8")


def _write_jsonl(path, rows, keys=("src", "tgt")):
    path.write_text("".join(json.dumps({keys[0]: a, keys[1]: b, "id": i}) + "\n" for i, (a, b) in enumerate(rows)),
                    encoding="utf-8")


def test_load_split_text(tmp_path):
    (tmp_path / "dev.xx").write_text("".join(a + "\n" for a, _ in PAIRS), encoding="utf-8")
    (tmp_path / "dev.yy").write_text("".join(b + "\n" for _, b in PAIRS), encoding="utf-8")
    data = DataConfig(format="text", dir=str(tmp_path), src_lang="xx", tgt_lang="yy")
    assert load_split(data, "dev") == ([a for a, _ in PAIRS], [b for _, b in PAIRS])
    assert describe(data, "dev") == str(tmp_path / "dev.{xx,yy}")


@pytest.mark.parametrize("fmt", ["tsv", "jsonl"])
def test_load_split_columns_are_named_by_the_languages(datasets_cache, fmt):
    folder = datasets_cache / "data"
    folder.mkdir()
    # The target column comes first in the file: columns are picked by name, not position.
    if fmt == "tsv":
        _write_tsv(folder / "train.tsv", [(b, a) for a, b in PAIRS], header=("en", "de"))
    else:
        _write_jsonl(folder / "train.jsonl", [(b, a) for a, b in PAIRS], keys=("en", "de"))
    data = DataConfig(format=fmt, dir=str(folder), src_lang="de", tgt_lang="en")
    assert load_split(data, "train") == ([a for a, _ in PAIRS], [b for _, b in PAIRS])
    assert describe(data, "train") == str(folder / f"train.{fmt}")


@pytest.mark.parametrize("fmt", ["tsv", "jsonl"])
def test_load_split_missing_column_names_it_and_the_columns(datasets_cache, fmt):
    folder = datasets_cache
    if fmt == "tsv":
        _write_tsv(folder / "train.tsv", PAIRS, header=("de", "fr"))
    else:
        _write_jsonl(folder / "train.jsonl", PAIRS, keys=("de", "fr"))
    data = DataConfig(format=fmt, dir=str(folder), src_lang="de", tgt_lang="en")
    with pytest.raises(S2SError) as e:
        load_split(data, "train")
    message = str(e.value)
    assert str(folder / f"train.{fmt}") in message
    assert "no column 'en'" in message and "de" in message and "fr" in message


@pytest.mark.parametrize("fmt", ["tsv", "jsonl"])
def test_load_split_missing_file(tmp_path, fmt):
    data = DataConfig(format=fmt, dir=str(tmp_path))
    with pytest.raises(S2SError, match=rf"train\.{fmt}: no such file"):
        load_split(data, "train")


def test_load_split_jsonl_non_text_value_names_the_row(datasets_cache):
    path = datasets_cache / "train.jsonl"
    path.write_text('{"de": "a", "en": "b"}\n{"de": "c", "en": null}\n', encoding="utf-8")
    with pytest.raises(S2SError, match=r"row 2: column 'en' is None, not text"):
        load_split(DataConfig(format="jsonl", dir=str(datasets_cache)), "train")


# TSV cells are literal: a leading quote is text, and an unclosed one never swallows the next lines.
def test_load_split_tsv_keeps_quotes(datasets_cache):
    rows = [('"Halt!" sagte er.', '"Stop!" he said.'), ("zwei", "two")]
    _write_tsv(datasets_cache / "train.tsv", rows, header=("de", "en"))
    data = DataConfig(format="tsv", dir=str(datasets_cache))
    assert load_split(data, "train") == ([a for a, _ in rows], [b for _, b in rows])


def test_load_split_tsv_unclosed_quote_stays_in_its_cell(datasets_cache):
    rows = [('"Hallo, sagte sie', '"Hello, she said'), ("zwei", "two"), ("drei", "three")]
    _write_tsv(datasets_cache / "train.tsv", rows, header=("de", "en"))
    data = DataConfig(format="tsv", dir=str(datasets_cache))
    assert load_split(data, "train") == ([a for a, _ in rows], [b for _, b in rows])


def test_load_split_text_misaligned(tmp_path):
    (tmp_path / "train.de").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "train.en").write_text("a\n", encoding="utf-8")
    with pytest.raises(S2SError, match="misaligned"):
        load_split(DataConfig(format="text", dir=str(tmp_path)), "train")
