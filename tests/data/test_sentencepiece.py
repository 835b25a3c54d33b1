"""SentencePiece: the special ids s2s relies on, and encode -> decode round trips."""
from __future__ import annotations

import pytest

from s2s.data.sentencepiece import BOS, EOS, PAD, UNK, load_sentencepiece, model_paths, train_sentencepiece
from s2s.errors import S2SError


@pytest.fixture
def lines(pairs):
    return [s for pair in pairs(40, seed=0) for s in pair]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_special_ids_are_set_explicitly(tmp_path, lines, model_type):
    sp = train_sentencepiece(lines, tmp_path / "spm.model", vocab_size=40, model_type=model_type)
    assert (PAD, UNK, BOS, EOS) == (0, 1, 2, 3)
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (PAD, UNK, BOS, EOS)
    assert sp.get_piece_size() <= 40


def test_encode_decode_round_trip(tmp_path, lines):
    sp = train_sentencepiece(lines + ["Zoë sieht 3 Bälle."], tmp_path / "spm.model", vocab_size=40)
    for text in lines[:10] + ["Zoë sieht 3 Bälle.", "der hund mag ein haus"]:
        ids = sp.encode(text)
        assert ids and min(ids) > EOS  # no specials inside ordinary text
        assert sp.decode(ids) == text


def test_written_model_loads_back_the_same(tmp_path, lines):
    path = tmp_path / "spm.model"
    sp = train_sentencepiece(lines, path, vocab_size=40)
    loaded = load_sentencepiece(path)
    assert loaded.get_piece_size() == sp.get_piece_size()
    assert loaded.encode(lines[:5]) == sp.encode(lines[:5])
    assert loaded.pad_id() == PAD


def test_no_text_is_an_error(tmp_path):
    with pytest.raises(S2SError, match="no text to train"):
        train_sentencepiece(["", "   "], tmp_path / "spm.model", vocab_size=40)


def test_load_missing_or_invalid_model(tmp_path):
    with pytest.raises(S2SError, match="no such SentencePiece model"):
        load_sentencepiece(tmp_path / "nope.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(S2SError, match="not a valid SentencePiece model"):
        load_sentencepiece(bad)


def test_model_paths(tmp_path):
    assert model_paths(tmp_path, joint=True) == (tmp_path / "spm.joint.model",) * 2
    src, tgt = model_paths(tmp_path, joint=False)
    assert src != tgt and src.parent == tgt.parent == tmp_path
