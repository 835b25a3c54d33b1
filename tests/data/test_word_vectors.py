"""Word vectors for the tagger: reading word2vec/GloVe files, training them with gensim, and a
tagging run that starts its embeddings from them (`vocab.word_vectors`)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from s2s.cli import main
from s2s.errors import S2SError
from s2s.tagging import TaggingTask
from s2s.word_vectors import init_embedding, read_corpus, read_word_vectors, train_word_vectors
from tests.test_tagging import _tiny_config, _write_conll


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


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
    with pytest.raises(S2SError, match="set model.emb_dim: 3"):
        init_embedding(weight, ["a"], ["a"], torch.zeros(1, 3))


def test_trains_vectors_from_text_jsonl_and_conll(tmp_path):
    text = _write(tmp_path / "news.txt", "Peter visited Paris in 1999.\n\nAnn Lee left.\n" * 20)
    reviews = _write(tmp_path / "reviews.jsonl", json.dumps({"text": "Peter<br />was great"}) + "\n\n")
    _write_conll(tmp_path / "train.txt", 10, seed=0)
    corpus = read_corpus([str(text), str(reviews)], [str(tmp_path / "train.txt")])
    assert corpus[0] == ["peter", "visited", "paris", "in", "0000", "."] and corpus[40] == ["peter", "was", "great"]
    assert len(corpus) == 40 + 1 + 10
    out = tmp_path / "vectors.vec"
    count = train_word_vectors(corpus, out, dim=4, min_count=1, epochs=1, threads=1)
    words, vectors = read_word_vectors(out)
    assert count == len(words) and "paris" in words and vectors.shape == (count, 4)
    with pytest.raises(S2SError, match="reviews.jsonl:1: expected a JSON object with a text field 'body'"):
        read_corpus([str(reviews)], [], text_field="body")


def test_tagging_run_starts_from_the_vectors(tmp_path):
    for split, n, seed in (("train", 20, 0), ("valid", 5, 1), ("test", 5, 2)):
        _write_conll(tmp_path / f"{split}.txt", n, seed)
    # "rome" is not in the training data: it joins the vocabulary with its vector.
    vec = _write(tmp_path / "v.vec", "2 8\nparis " + " ".join(["0.5"] * 8) + "\nRome " + " ".join(["-0.25"] * 8) + "\n")
    config = _tiny_config(tmp_path)
    config = replace(config, vocab=replace(config.vocab, word_vectors=str(vec)))
    (tmp_path / "run").mkdir()
    task = TaggingTask(config, tmp_path / "run", resume=False)
    ids = task.vocab.word_ids
    emb = task.model.encoder.embed.weight
    assert "rome" in ids and torch.equal(emb[ids["rome"]], torch.full((8,), -0.25))
    assert torch.equal(emb[ids["paris"]], torch.full((8,), 0.5))
    # The run's own vocabulary file keeps the words: tagging needs no vectors file afterwards.
    assert "rome" in json.loads((tmp_path / "run" / "tagging_vocab.json").read_text())["words"]

    # Resuming needs the run's own files only: the vectors may have moved.
    from s2s.train import train

    train(replace(config, train=replace(config.train, epochs=1)), tmp_path / "run3")
    moved = vec.rename(tmp_path / "moved.vec")
    resumed = replace(config, vocab=replace(config.vocab, word_vectors=str(moved)), train=replace(config.train, epochs=2))
    assert train(resumed, tmp_path / "run3", resume=True)["epoch"] == 2
    vec = moved.rename(vec)

    wrong = replace(config, model=replace(config.model, emb_dim=4))
    with pytest.raises(S2SError, match="8 dimensions but model.emb_dim is 4"):
        TaggingTask(wrong, tmp_path / "run2", resume=False)


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
