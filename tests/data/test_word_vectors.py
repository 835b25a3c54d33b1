"""Word vectors for the tagger: reading word2vec/GloVe files, training them with gensim, putting them
into an embedding, and `s2s vectors`. (A tagging run that starts from them: tests/tasks/test_tagging.py.)"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from s2s.cli import main
from s2s.data.word_vectors import init_embedding, read_corpus, read_word_vectors, train_word_vectors
from s2s.errors import S2SError


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _write_conll(path: Path, n: int) -> None:
    """A CoNLL file of n two-token sentences in one document."""
    _write(path, "-DOCSTART- -X- -X- O\n\n" + "Peter NN O I-PER\nleft VBD O O\n\n" * n)


def test_reads_word2vec_and_glove_files_normalised(tmp_path):
    w2v = _write(tmp_path / "a.vec", "3 2\nParis 1 2\nparis 9 9\n1999 0.5 -1e-1\n")
    words, vectors = read_word_vectors(w2v)
    assert words == ["paris", "0000"]  # lowercased, digits to 0; the first vector of a word wins
    assert torch.equal(vectors, torch.tensor([[1.0, 2.0], [0.5, -0.1]]))
    glove = _write(tmp_path / "b.txt", "the 0.1 0.2 0.3\nParis 1 2 3\n")
    words, vectors = read_word_vectors(glove, lowercase=False)
    assert words == ["the", "Paris"] and vectors.shape == (2, 3)


@pytest.mark.parametrize("text, message", [
    ("2 2\nparis 1 2\nlondon 1\n", "a.vec:3: expected a word and 2 numbers, got 2 fields"),
    ("paris 1 x\n", "a.vec:1: not a number"),
    ("paris 1 nan\n", "a.vec:1: the vector has a NaN"),
    ("2 2\n\n", "a.vec: no word vectors"),
])
def test_malformed_vector_files_name_file_and_line(tmp_path, text, message):
    with pytest.raises(S2SError, match=message):
        read_word_vectors(_write(tmp_path / "a.vec", text))


def test_init_embedding_copies_found_rows_at_the_vectors_scale():
    torch.manual_seed(0)
    weight = torch.empty(5, 2)
    found = init_embedding(weight, ["<pad>", "<unk>", "paris", "rome", "oslo"], ["oslo", "paris", "x"],
                           torch.tensor([[3.0, 4.0], [1.0, 2.0], [0.0, 0.0]]))
    assert found == 2
    assert torch.equal(weight[2], torch.tensor([1.0, 2.0])) and torch.equal(weight[4], torch.tensor([3.0, 4.0]))
    assert torch.equal(weight[0], torch.zeros(2))
    with pytest.raises(S2SError, match="set encoder.emb_dim: 3"):
        init_embedding(weight, ["a"], ["a"], torch.zeros(1, 3))


def test_trains_vectors_from_text_jsonl_and_conll(tmp_path):
    text = _write(tmp_path / "news.txt", "Peter visited Paris in 1999.\n\nAnn Lee left.\n" * 20)
    reviews = _write(tmp_path / "reviews.jsonl", json.dumps({"text": "Peter<br />was great"}) + "\n\n")
    _write_conll(tmp_path / "train.txt", 10)
    corpus = read_corpus([str(text), str(reviews)], [str(tmp_path / "train.txt")])
    assert corpus[0] == ["peter", "visited", "paris", "in", "0000", "."] and corpus[40] == ["peter", "was", "great"]
    assert len(corpus) == 40 + 1 + 10
    out = tmp_path / "vectors.vec"
    count = train_word_vectors(corpus, out, dim=4, min_count=1, epochs=1, threads=1)
    words, vectors = read_word_vectors(out)
    assert count == len(words) and "paris" in words and vectors.shape == (count, 4)
    with pytest.raises(S2SError, match="reviews.jsonl:1: expected a JSON object with a text field 'body'"):
        read_corpus([str(reviews)], [], text_field="body")


def test_vectors_cli(tmp_path, capsys):
    text = _write(tmp_path / "t.txt", "Peter visited Paris .\n" * 10)
    out = tmp_path / "v.vec"
    assert main(["-q", "vectors", "--text", str(text), "--out", str(out), "--dim", "4", "--min-count", "1", "--threads", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["words"] == 4 and summary["tokens"] == 40 and out.is_file()
    assert main(["-q", "vectors", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: vectors needs some text") and err.count("\n") == 1
    assert main(["-q", "vectors", "--text", str(tmp_path / "missing.txt"), "--out", str(out)]) == 2
    assert "missing.txt" in capsys.readouterr().err
