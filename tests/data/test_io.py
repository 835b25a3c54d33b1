"""Readers that fail with file and line, batches with BOS/EOS/padding, and length-bucketed batching."""
from __future__ import annotations

import json
import random

import pytest
import torch

from s2s.config import DataConfig
from s2s.data import describe, load_split, make_batch, pad, read_lines, read_parallel, token_batches
from s2s.errors import S2SError
from s2s.tokenizer import BOS, EOS, PAD

# --- reading --------------------------------------------------------------------------------------


def test_read_lines_strips_line_ends(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("eins\r\nzwei\n\ndrei".encode("utf-8"))
    assert read_lines(path) == ["eins", "zwei", "", "drei"]


def test_read_lines_missing_file_names_it(tmp_path):
    with pytest.raises(S2SError, match=r"nope\.de: no such file"):
        read_lines(tmp_path / "nope.de")


def test_read_lines_directory_is_refused(tmp_path):
    with pytest.raises(S2SError, match="cannot read"):
        read_lines(tmp_path)


def test_read_lines_non_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "bad.de"
    path.write_bytes("gut\nauch gut\nschlecht: ".encode("utf-8") + b"\xe4\n" + b"danach\n")
    with pytest.raises(S2SError) as e:
        read_lines(path)
    assert str(e.value).startswith(f"{path}:3: not valid UTF-8")
    assert "0xe4" in str(e.value)


@pytest.mark.parametrize("separator", ["\u2028", "\x0c", "\x85"], ids=["U+2028", "form-feed", "NEL"])
def test_read_lines_splits_only_on_line_ends(tmp_path, separator):
    path = tmp_path / "a.txt"
    path.write_text(f"eins{separator}zwei\ndrei\n", encoding="utf-8")
    assert read_lines(path) == [f"eins{separator}zwei", "drei"]


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


# --- batches ----------------------------------------------------------------------------------


def test_pad_and_make_batch():
    src = [[5, 6, 7], [8], [9, 10]]
    tgt = [[11], [12, 13, 14, 15], []]
    batch = make_batch(src, tgt)
    assert batch.src.tolist() == [[5, 6, 7], [8, PAD, PAD], [9, 10, PAD]]
    assert batch.src_lengths.tolist() == [3, 1, 2]
    assert batch.tgt_in.shape == batch.tgt_out.shape == (3, 5)
    assert batch.tgt_in.tolist() == [[BOS, 11, PAD, PAD, PAD], [BOS, 12, 13, 14, 15], [BOS, PAD, PAD, PAD, PAD]]
    assert batch.tgt_out.tolist() == [[11, EOS, PAD, PAD, PAD], [12, 13, 14, 15, EOS], [EOS, PAD, PAD, PAD, PAD]]
    assert batch.num_tokens == 2 + 5 + 1 == int((batch.tgt_out != PAD).sum())
    # Teacher forcing: the output sequence is the input sequence shifted by one.
    for i, t in enumerate(tgt):
        assert batch.tgt_in[i, 1 : len(t) + 1].tolist() == batch.tgt_out[i, : len(t)].tolist() == t
    assert batch.src.dtype == batch.tgt_in.dtype == torch.long
    moved = batch.to(torch.device("cpu"))
    assert moved.num_tokens == batch.num_tokens and torch.equal(moved.src, batch.src)


def test_pad_single():
    tokens, lengths = pad([[4, 5]])
    assert tokens.tolist() == [[4, 5]] and lengths.tolist() == [2]


def _lengths(n: int = 60, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, 7) for _ in range(n)] + [30]  # the last example alone exceeds max_tokens


def test_token_batches_cover_every_index_exactly_once():
    lengths = _lengths()
    batches = token_batches(lengths, max_tokens=20, seed=1, epoch=0)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(batches)


@pytest.mark.parametrize("max_tokens", [1, 7, 20, 64, 10_000])
def test_token_batches_respect_max_tokens(max_tokens):
    lengths = _lengths()
    for b in token_batches(lengths, max_tokens=max_tokens, seed=1, epoch=0):
        padded = len(b) * max(lengths[i] for i in b)
        assert padded <= max_tokens or len(b) == 1  # only a single over-long example may exceed it
    over = token_batches(lengths, max_tokens=20, seed=1, epoch=0)
    assert [len(lengths) - 1] in over  # the length-30 example sits alone


def test_token_batches_group_similar_lengths():
    lengths = _lengths()
    batches = token_batches(lengths, max_tokens=20, seed=1, epoch=0)
    # Sorted by length before cutting: batches do not interleave in length.
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    for (lo1, hi1), (lo2, hi2) in zip(spans, spans[1:]):
        assert hi1 <= lo2


def test_token_batches_are_deterministic_per_seed_and_epoch_and_differ_across_epochs():
    lengths = _lengths()
    a = token_batches(lengths, 20, seed=3, epoch=2)
    assert a == token_batches(lengths, 20, seed=3, epoch=2)
    assert a != token_batches(lengths, 20, seed=3, epoch=3)
    assert a != token_batches(lengths, 20, seed=4, epoch=2)
    # A different order of the same examples.
    flat = sorted(i for b in token_batches(lengths, 20, seed=3, epoch=3) for i in b)
    assert flat == sorted(i for b in a for i in b)


def test_token_batches_empty():
    assert token_batches([], 20, seed=0, epoch=0) == []
