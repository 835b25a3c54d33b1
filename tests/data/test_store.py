"""The token store: what is written is read back, a store of other data or another tokenizer is never
reused, a damaged one fails with one line saying how to rebuild it, a killed build leaves nothing."""
from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest

from s2s.data.sentencepiece import Sample
from s2s.data.store import StoreWriter, open_store
from s2s.errors import S2SError

KEY = {"data": [["train.de", 10, "ab"]], "tokenizers": ["cd"]}


def _examples(n: int, vocab: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(rng.randint(0, 9))] for _ in range(n)]


def _build(folder, src, tgt, vocab=50, chunk=7, key=KEY):
    writer = StoreWriter(folder, {"src": vocab, "tgt": vocab})
    for start in range(0, len(src), chunk):
        s, t = src[start : start + chunk], tgt[start : start + chunk]
        writer.add({"src": s, "tgt": t}, [max(len(a), len(b) + 1) for a, b in zip(s, t)])
    return writer.finish(key)


@pytest.mark.parametrize("vocab, dtype", [(50, np.uint8), (300, np.uint16), (70_000, np.int32)])
def test_store_reads_back_every_example_in_any_order(tmp_path, vocab, dtype):
    src, tgt = _examples(40, vocab, 1), _examples(40, vocab, 2)
    built = _build(tmp_path / "store", src, tgt, vocab)
    store = open_store(tmp_path / "store", KEY)
    assert len(store) == len(built) == 40 and store.dtypes["src"] == dtype
    order = list(range(40))
    random.Random(0).shuffle(order)
    assert store.get("src", order) == [src[i] for i in order]
    assert store.get("tgt", order) == [tgt[i] for i in order]
    assert store.lengths.tolist() == [max(len(a), len(b) + 1) for a, b in zip(src, tgt)]
    assert not (tmp_path / "store.tmp").exists()


def test_store_of_other_data_or_tokenizer_is_not_reused(tmp_path, caplog):
    _build(tmp_path / "store", [[1]], [[2]])
    with caplog.at_level(logging.INFO, logger="s2s.data.store"):
        assert open_store(tmp_path / "store", {**KEY, "tokenizers": ["ef"]}) is None
    assert "other tokenizers; rebuilding it" in caplog.text
    assert open_store(tmp_path / "missing", KEY) is None


def test_store_of_another_version_is_rebuilt(tmp_path, caplog):
    _build(tmp_path / "store", [[1]], [[2]])
    meta = tmp_path / "store" / "meta.json"
    meta.write_text(json.dumps(json.loads(meta.read_text()) | {"version": 0}))
    with caplog.at_level(logging.INFO, logger="s2s.data.store"):
        assert open_store(tmp_path / "store", KEY) is None
    assert "another version of s2s" in caplog.text


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "meta"])
def test_damaged_store_fails_with_one_line_naming_it(tmp_path, damage):
    _build(tmp_path / "store", _examples(30, 50), _examples(30, 50, 3))
    ids = tmp_path / "store" / "tgt.ids"
    match damage:
        case "truncate":
            ids.write_bytes(ids.read_bytes()[:-3])
        case "flip":
            data = bytearray(ids.read_bytes())
            data[5] ^= 0xFF
            ids.write_bytes(bytes(data))
        case "delete":
            ids.unlink()
        case "meta":
            (tmp_path / "store" / "meta.json").write_text("{not json")
    with pytest.raises(S2SError) as e:
        open_store(tmp_path / "store", KEY)
    message = str(e.value)
    assert "\n" not in message and str(tmp_path / "store") in message and "rebuilt" in message
    if damage != "meta":
        assert "tgt.ids" in message


def test_a_failed_build_leaves_no_store(tmp_path):
    writer = StoreWriter(tmp_path / "store", {"src": 50})
    writer.add({"src": [[1, 2]]}, [2])
    writer.abort()
    assert not (tmp_path / "store").exists() and not (tmp_path / "store.tmp").exists()


def test_sample_is_everything_in_order_while_small_and_bounded_and_uniform_after():
    small = Sample(10, seed=0)
    small.add(["a", "b"])
    small.add(["c"])
    assert small.lines == ["a", "b", "c"]
    counts = np.zeros(100)
    for seed in range(400):
        sample = Sample(10, seed)
        for start in range(0, 100, 7):
            sample.add([str(i) for i in range(start, min(start + 7, 100))])
        assert len(sample.lines) == 10 and len(set(sample.lines)) == 10
        for line in sample.lines:
            counts[int(line)] += 1
    # Each line is kept with probability 10/100: 40 times in 400 samples, within a few standard deviations.
    assert counts.min() > 15 and counts.max() < 65
    again = Sample(10, 3)
    again.add([str(i) for i in range(100)])
    same = Sample(10, 3)
    same.add([str(i) for i in range(100)])
    assert again.lines == same.lines
