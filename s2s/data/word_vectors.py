"""Word vectors for the tagger: train them on unlabelled text (gensim's word2vec), read them
from a word2vec/GloVe text file, and put them into a vocabulary and an embedding matrix.

The vectors' words go through the tagging vocabulary's own normalisation (`tokenize.normalize`:
lowercased, digits mapped to 0), so a vector trained here and a word seen by the tagger meet.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

import torch

from s2s.data.conll import read_conll
from s2s.data.io import read_lines, refuse_carriage_returns
from s2s.data.labelled import texts_from_jsonl
from s2s.data.tokenize import normalize, tokenize
from s2s.errors import S2SError

log = logging.getLogger(__name__)

FLOAT32_MAX = torch.finfo(torch.float32).max


def read_corpus(text_files: list[str], conll_files: list[str], lowercase: bool = True, text_field: str = "text") -> list[list[str]]:
    """Normalised token lists: raw text (one text per line, or JSONL with `text_field` when the file
    ends in .jsonl) tokenised by the tagger's rule, and the tokens of CoNLL files as they are."""
    corpus = []
    for name in text_files:
        path = Path(name)
        texts = read_lines(path)
        if path.suffix.lower() == ".jsonl":
            # IMDB reviews keep their HTML line breaks
            texts = [t.replace("<br />", " ") for t in texts_from_jsonl(texts, str(path), text_field)]
        corpus += [[normalize(w, lowercase) for w in tokenize(t)[0]] for t in texts if t.strip()]
    for name in conll_files:
        corpus += [[normalize(w, lowercase) for w in s.tokens] for s in read_conll(name, tagged=False)]
    return corpus


def train_word_vectors(corpus: list[list[str]], out: str | Path, dim: int = 100, window: int = 5, min_count: int = 3,
                       epochs: int = 5, threads: int = 2, seed: int = 1234) -> int:
    """Skip-gram with negative sampling (Mikolov et al. 2013) over `corpus`, written to `out` in
    word2vec text format, most frequent word first. Returns the number of words."""
    try:
        from gensim.models import Word2Vec
    except ImportError:
        raise S2SError("training word vectors needs gensim: pip install 's2s[vectors]'") from None
    if not corpus:
        raise S2SError("no text to train word vectors on")
    for name, value in (("dim", dim), ("window", window), ("min_count", min_count), ("epochs", epochs), ("threads", threads)):
        if value < 1:
            raise S2SError(f"word vectors: {name} must be at least 1, got {value}")
    if max(Counter(w for text in corpus for w in text).values(), default=0) < min_count:
        raise S2SError(f"word vectors: no word occurs min_count={min_count} times in the text")
    log.info("word2vec: %d texts, %d tokens, dim %d, %d epochs, %d threads",
             len(corpus), sum(map(len, corpus)), dim, epochs, threads)
    model = Word2Vec(corpus, vector_size=dim, window=window, min_count=min_count, sg=1, negative=5,
                     epochs=epochs, workers=threads, seed=seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    model.wv.save_word2vec_format(str(tmp), binary=False)
    tmp.replace(out)
    return len(model.wv)


def read_word_vectors(path: str | Path, lowercase: bool = True) -> tuple[list[str], torch.Tensor]:
    """Words and their vectors (N, D) from a word2vec (with an 'N D' header line) or GloVe (without)
    text file. Words are normalised like the tagging vocabulary; the first vector of a word wins."""
    path = Path(path)
    words, rows, seen, dim = [], [], set(), None
    for number, line in enumerate(refuse_carriage_returns(read_lines(path), str(path)), start=1):
        parts = line.rstrip().split(" ")
        if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
            continue  # word2vec header: count and dimension
        if not line.strip():
            continue
        if dim is None:
            dim = len(parts) - 1
        if len(parts) - 1 != dim or dim < 1:
            raise S2SError(f"{path}:{number}: expected a word and {dim} numbers, got {len(parts)} fields")
        try:
            vector = [float(x) for x in parts[1:]]
        except ValueError:
            raise S2SError(f"{path}:{number}: not a number among the vector's values") from None
        if not all(math.isfinite(x) for x in vector):
            raise S2SError(f"{path}:{number}: the vector has a NaN or infinite value")
        if max(map(abs, vector)) > FLOAT32_MAX:  # it would become infinite in the embedding
            raise S2SError(f"{path}:{number}: the vector has a value beyond float32's range (±{FLOAT32_MAX:.3g})")
        if not parts[0]:
            raise S2SError(f"{path}:{number}: no word before the numbers (the line starts with a space)")
        word = normalize(parts[0], lowercase)
        if word not in seen:
            seen.add(word)
            words.append(word)
            rows.append(vector)
    if not words:
        raise S2SError(f"{path}: no word vectors")
    return words, torch.tensor(rows)


def init_embedding(weight: torch.Tensor, words: list[str], vector_words: list[str], vectors: torch.Tensor, pad_id: int = 0) -> int:
    """Copy `vectors` into the rows of `weight` (V, D) whose word has one; the other rows are drawn
    at the vectors' own scale so no group of words starts out louder. Returns how many were found."""
    if vectors.size(1) != weight.size(1):
        raise S2SError(f"the word vectors have {vectors.size(1)} dimensions but encoder.emb_dim is {weight.size(1)}; set encoder.emb_dim: {vectors.size(1)}")
    index = {w: i for i, w in enumerate(vector_words)}
    found = [(row, index[w]) for row, w in enumerate(words) if w in index]
    with torch.no_grad():
        weight.normal_(0.0, float(vectors.std()))
        if found:
            rows, cols = zip(*found)
            weight[list(rows)] = vectors[list(cols)].to(weight.dtype)
        weight[pad_id].zero_()
    return len(found)
