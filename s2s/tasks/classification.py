"""Classification (N-vs-1): the shared encoder, its states pooled into one vector, a small
classifier; trained on labelled JSONL/TSV/CSV, scored by accuracy, macro-F1 and a confusion matrix.

Text becomes tokens by `s2s.data.tokenize.text_tokens`, and a text longer than
data.max_text_tokens is cut by data.truncate (`s2s.data.tokenize.truncate`).
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from s2s import checkpoint, distributed
from s2s.config import Config
from s2s.data.batching import pad
from s2s.data.labelled import FORMATS, Example, format_of, hold_out_order, iter_labelled, read_labelled
from s2s.data.store import StoreWriter, TokenStore, file_digest, fingerprint
from s2s.data.tokenize import text_tokens, truncate
from s2s.data.vocab import Vocabulary, load_json, save_json
from s2s.device import resolve_device
from s2s.errors import S2SError
from s2s.metrics import accuracy_scores
from s2s.nn import Output
from s2s.nn.encoder import Encoder
from s2s.nn.pooling import POOLINGS, AttentionPooling, pool

log = logging.getLogger(__name__)

VOCAB_FILE = "classification_vocab.json"


class TextClassifier(nn.Module):
    """N-vs-1 classification: the shared Encoder, its states pooled into one vector per text
    (any of mean, max, last state, attention, concatenated in the order given) and a small
    classifier. Dropout comes after pooling, not before: the encoder returns its states undropped
    (output_dropout=False), since dropout before a max makes training-time maxima larger than
    test-time ones (Kim 2014 also drops after pooling)."""

    def __init__(self, encoder: Encoder, num_classes: int, pooling: tuple[str, ...], head_hidden: int = 0,
                 attn_size: int = 128, dropout: float = 0.0, label_smoothing: float = 0.0):
        super().__init__()
        unknown = [p for p in pooling if p not in POOLINGS]
        if not pooling or unknown:
            raise ValueError(f"pooling must be one or more of {', '.join(POOLINGS)}, got {pooling}")
        self.encoder = encoder
        self.num_classes = num_classes
        self.pooling = tuple(pooling)
        size = encoder.output_size
        self.attention = AttentionPooling(size, attn_size) if "attention" in pooling else None
        self.dropout = nn.Dropout(dropout)
        pooled = size * len(pooling)
        if head_hidden:
            self.head = nn.Sequential(nn.Linear(pooled, head_hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(head_hidden, num_classes))
        else:
            self.head = nn.Linear(pooled, num_classes)
        self.label_smoothing = label_smoothing

    def pool(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """tokens (B, T), lengths (B,) -> pooled features (B, len(pooling) * D)."""
        enc = self.encoder(tokens, lengths)  # states (B, T', D), 0 on padding
        return torch.cat([pool(mode, enc, self.attention) for mode in self.pooling], dim=-1)

    def logits(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pool(tokens, lengths)))  # (B, K)

    def forward(self, batch) -> Output:
        logits = self.logits(batch.tokens, batch.lengths)
        loss = F.cross_entropy(logits.float(), batch.labels, label_smoothing=self.label_smoothing)
        return Output(loss, logits, int(batch.labels.numel()))


def build_model(config: Config, num_words: int, num_classes: int) -> TextClassifier:
    e, h = config.encoder, config.classification
    encoder = Encoder(num_words, e.emb_dim, e.hidden_size, e.num_layers, e.cell, e.dropout, e.bidirectional,
                      conv_filters=e.conv_filters, conv_kernel=e.conv_kernel, conv_pool=e.conv_pool, output_dropout=False)
    return TextClassifier(encoder, num_classes, tuple(h.pooling.split("+")), h.head_hidden, h.attn_size, e.dropout,
                          config.train.label_smoothing)


def _sort_labels(labels: set[str]) -> list[str]:
    """Numeric labels in numeric order (0, 1, 2, 10), otherwise alphabetical."""
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


class LabelVocab:
    """A classifier's vocabularies: words and labels."""

    def __init__(self, words: list[str], labels: list[str]):
        self.words, self.labels = Vocabulary(words), Vocabulary(labels)

    @classmethod
    def from_counts(cls, words: Counter, labels: Counter, min_freq: int = 1, max_words: int = 0) -> "LabelVocab":
        return cls(Vocabulary.from_counts(words, min_freq, max_words).items, _sort_labels(set(labels)))

    def save(self, path: Path) -> None:
        save_json(path, {"words": self.words.items, "labels": self.labels.items})

    @classmethod
    def load(cls, path: Path) -> "LabelVocab":
        data = load_json(path, ("words", "labels"), "classification vocabulary")
        return cls(data["words"], data["labels"])

    def encode(self, tokens: list[str]) -> list[int]:
        """Word ids; a text without tokens (e.g. only "<br />") becomes one UNK."""
        return self.words.encode(tokens) or [self.words.unk]

    def label_id(self, example: Example, where: str) -> int:
        found = self.labels.ids.get(example.label)
        if found is None:
            raise S2SError(f"{where}:{example.line}: label {example.label!r} is not one the model knows ({', '.join(self.labels)})")
        return found


class TextBatch(NamedTuple):
    tokens: torch.Tensor  # (B, T) word ids, 0-padded
    lengths: torch.Tensor  # (B,)
    labels: torch.Tensor  # (B,) label ids (0 when unknown, at prediction)

    def to(self, device: torch.device) -> "TextBatch":
        return TextBatch(*(x.to(device, non_blocking=True) for x in self))


def make_batch(ids: list[list[int]], labels: list[int] | None = None) -> TextBatch:
    tokens, lengths = pad(ids)
    return TextBatch(tokens, lengths, torch.tensor(labels if labels is not None else [0] * len(ids)))


def split_path(config: Config, split: str) -> Path:
    return Path(config.data.dir) / f"{split}.{config.data.format}"


class Split(NamedTuple):
    """Which rows of the training file are training rows (a mask; None: all of them) and which are the
    held-out dev rows (in hold_out_order's order), with data.dev_size and data.max_train applied."""

    train: np.ndarray | None
    dev: list[int]


def split_rows(config: Config) -> Split:
    """The Split of the training file, after one pass that counts its rows (none without data.dev_size).
    Held-out rows are hold_out_order's choice, and max_train takes the first rows of its shuffled order, so a
    file sorted by label still gives a subset with every label."""
    data = config.data
    if not data.dev_size:
        return Split(None, [])
    path = split_path(config, data.train)
    count = sum(1 for _ in iter_labelled(path, data.format, data.text_field, data.label_field))
    order = np.asarray(hold_out_order(count, data.dev_size, data.dev_seed, str(path)))
    train = np.zeros(count, dtype=bool)
    train[order[data.dev_size :][: data.max_train or None]] = True
    return Split(train, order[: data.dev_size].tolist())


def read_split(config: Config, split: str, rows: Split | None = None) -> tuple[list[Example], str]:
    """The examples of the split named `split` and where they were read; with data.dev_size the dev
    split is the rows held out of the training file (in hold_out_order's order; `rows` is computed when not given)."""
    data = config.data
    if data.dev_size and split in (data.train, data.dev):
        path = split_path(config, data.train)
        rows = rows or split_rows(config)
        if split == data.train:
            return list(training_rows(config, rows)), str(path)
        held = dict.fromkeys(rows.dev)
        for i, e in enumerate(iter_labelled(path, data.format, data.text_field, data.label_field)):
            if i in held:
                held[i] = e
        return list(held.values()), str(path)  # held-out rows keep their line numbers
    path = split_path(config, split)
    return read_labelled(path, data.format, data.text_field, data.label_field), str(path)


def training_rows(config: Config, rows: Split) -> Iterator[Example]:
    """The training rows of the training file, read as needed (the first data.max_train without data.dev_size)."""
    data = config.data
    examples = iter_labelled(split_path(config, data.train), data.format, data.text_field, data.label_field)
    if rows.train is None:
        return itertools.islice(examples, data.max_train or None)
    return (e for i, e in enumerate(examples) if rows.train[i])


STORE = "store"  # the run directory's token store folder
CHUNK = 10_000  # rows encoded at a time into the store


class Task:
    """Training data, model and dev scoring for `s2s train` with task: classification.

    The training texts live in a token store in the run directory (s2s.data.store), encoded once; the
    vocabulary is counted in a pass over the file, so no part of the corpus is held in memory."""

    metric = "accuracy"
    higher_is_better = True

    def __init__(self, config: Config, run_dir: Path, resume: bool = False):
        data, v = config.data, config.vocab
        train_path = split_path(config, data.train)
        rows = split_rows(config)
        dev, dev_where = read_split(config, data.dev, rows)
        if data.max_dev:
            dev = dev[: data.max_dev]

        vocab_path = run_dir / VOCAB_FILE
        if resume:
            self.vocab = LabelVocab.load(vocab_path)
        else:
            words, labels = Counter(), Counter()
            for e in training_rows(config, rows):
                words.update(text_tokens(e.text, v.lowercase))
                labels[e.label] += 1
            if not labels:
                raise S2SError(f"{train_path}: no labelled rows")
            self.vocab = LabelVocab.from_counts(words, labels, v.min_freq, v.max_words)
            self.vocab.save(vocab_path)
        vocab = self.vocab
        if len(vocab.labels) < 2:
            raise S2SError(f"{train_path}: the training rows have a single label ({vocab.labels[0]!r}); classification needs two or more")

        self.budget, self.mode = data.max_text_tokens, data.truncate
        key = {"data": fingerprint(train_path), "vocab": file_digest(vocab_path),
               "settings": [data.max_train, data.dev_size, data.dev_seed, data.max_text_tokens, data.truncate, v.lowercase,
                            data.text_field, data.label_field]}
        folder = run_dir / STORE
        self.store = distributed.open_or_build_store(folder, key, lambda: self.build_store(config, folder, key, rows))
        self.lengths = self.store.lengths
        counts = self.store.meta["label_counts"]
        log.info("%s: %d training rows (%s), %d dev rows; %d words", train_path, len(self.store),
                 ", ".join(f"{label}: {counts.get(label, 0)}" for label in vocab.labels), len(dev), len(vocab.words))
        self.dev_ids = [vocab.encode(truncate(text_tokens(e.text, v.lowercase), self.budget, self.mode)) for e in dev]
        self.dev_labels = [vocab.label_id(e, dev_where) for e in dev]
        self.word_dropout, self.trim = config.train.word_dropout, config.train.trim_batches
        self.batch_size = config.decode.batch_size
        self.model = build_model(config, len(vocab.words), len(vocab.labels))
        if config.encoder.init and not resume:  # a resumed run takes every weight from last.pt
            from s2s.tasks.pretraining import init_encoder

            init_encoder(self.model, config, vocab.words.items)

    def build_store(self, config: Config, folder: Path, key: dict, rows: Split) -> TokenStore:
        """Encode the training rows (cut to data.max_text_tokens) and their labels into a token store."""
        vocab, lowercase, where = self.vocab, config.vocab.lowercase, str(split_path(config, config.data.train))
        writer = StoreWriter(folder, {"text": len(vocab.words), "label": len(vocab.labels)})
        labels = Counter()
        try:
            examples = training_rows(config, rows)
            while chunk := list(itertools.islice(examples, CHUNK)):
                ids = [vocab.encode(truncate(text_tokens(e.text, lowercase), self.budget, self.mode)) for e in chunk]
                writer.add({"text": ids, "label": [[vocab.label_id(e, where)] for e in chunk]}, [len(x) for x in ids])
                labels.update(e.label for e in chunk)
            writer.meta["label_counts"] = dict(labels)
            return writer.finish(key)
        except BaseException:
            writer.abort()
            raise

    def batch(self, indices: list[int]) -> TextBatch:
        ids = self.store.get("text", indices)
        if self.trim:
            # On CPU, torch's RNN backward over a packed batch of unequal lengths is far slower than
            # over equal lengths (torch 2.13: slice_backward fills a full-size gradient at every time
            # step). Batches group similar lengths, so cutting each text to the batch's shortest
            # (by data.truncate) drops few tokens (docs/speed.md).
            shortest = min(len(x) for x in ids)
            ids = [truncate(x, shortest, self.mode) for x in ids]
        if self.word_dropout:
            unk = self.vocab.words.unk
            ids = [[unk if random.random() < self.word_dropout else w for w in x] for x in ids]
        return make_batch(ids, [label for (label,) in self.store.get("label", indices)])

    def validate(self, model: TextClassifier, device: torch.device) -> dict:
        probs = predict_probs(model, self.dev_ids, self.batch_size, device)
        found = accuracy_scores(self.dev_labels, probs.argmax(-1).tolist(), self.vocab.labels)
        return {"accuracy": found["accuracy"], "macro_f1": found["macro_f1"]}


@torch.inference_mode()
def predict_probs(model: TextClassifier, ids: list[list[int]], batch_size: int, device: torch.device) -> torch.Tensor:
    """Class probabilities (N, K) of encoded texts, in input order; batches group similar lengths."""
    was_training = model.training
    model.eval()
    out = torch.empty(len(ids), model.num_classes)  # (N, K)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            b = make_batch([ids[i] for i in rows]).to(device)
            out[rows] = model.logits(b.tokens, b.lengths).float().softmax(-1).cpu()
    finally:
        model.train(was_training)
    return out


@dataclass
class Prediction:
    label: str
    prob: float  # the probability of `label`
    probs: dict[str, float]  # every label's probability

    def to_tsv(self) -> str:
        return f"{self.label}\t{self.prob:.4f}"

    def to_json(self) -> str:
        return json.dumps({"label": self.label, "prob": round(self.prob, 4), "probs": {k: round(p, 4) for k, p in self.probs.items()}},
                          ensure_ascii=False)


def item_list(items, method: str, what: str) -> list:
    """`items` as a list; a bare string is refused, not read as a list of one-character texts."""
    if isinstance(items, (str, bytes)):
        raise TypeError(f"{method} takes a list of {what}, got a string: pass [text] for one")
    return list(items)


class Classifier:
    """Classify raw texts with a trained model: `Classifier.load(run_dir).predict(["A fine film."])`."""

    def __init__(self, model: TextClassifier, vocab: LabelVocab, config: Config, device: torch.device):
        self.model, self.vocab, self.device = model, vocab, device
        self.lowercase, self.budget, self.mode = config.vocab.lowercase, config.data.max_text_tokens, config.data.truncate
        self.text_field, self.label_field, self.format = config.data.text_field, config.data.label_field, config.data.format
        self.batch_size = config.decode.batch_size
        self.config = config

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto") -> "Classifier":
        config, payload, path = checkpoint.load_trained(run_dir, "classification")
        vocab = LabelVocab.load(path.parent / VOCAB_FILE)
        model = build_model(config, len(vocab.words), len(vocab.labels))
        checkpoint.load_weights(model, payload, path)
        target = resolve_device(device)
        return cls(model.to(target).eval(), vocab, config, target)

    def encode(self, text: str) -> list[int]:
        return self.vocab.encode(truncate(text_tokens(text, self.lowercase), self.budget, self.mode))

    def predict(self, texts: list[str], batch_size: int | None = None) -> list[Prediction | None]:
        """One prediction per text, in input order; None for an empty (or all-space) text."""
        texts = item_list(texts, "Classifier.predict", "texts")
        todo = [i for i, t in enumerate(texts) if t.strip()]
        probs = predict_probs(self.model, [self.encode(texts[i]) for i in todo], batch_size or self.batch_size, self.device)
        out: list[Prediction | None] = [None] * len(texts)
        for i, row in zip(todo, probs.tolist()):
            best = max(range(len(row)), key=row.__getitem__)
            out[i] = Prediction(self.vocab.labels[best], row[best], dict(zip(self.vocab.labels.items, row)))
        return out

    def evaluate(self, examples: list[Example], where: str, batch_size: int | None = None) -> tuple[dict, list[str]]:
        """Scores (see `scores`) of the predictions on labelled examples read from `where`, and the
        predicted labels. A gold label the model does not know fails with file:line."""
        examples = item_list(examples, "Classifier.evaluate", "labelled examples (s2s.data.labelled.Example)")
        if not all(isinstance(e, Example) for e in examples):
            raise TypeError("Classifier.evaluate takes a list of labelled examples (s2s.data.labelled.Example, "
                            "e.g. from read_labelled)")
        if not examples:
            raise S2SError(f"{where}: no labelled examples to score")
        gold = [self.vocab.label_id(e, where) for e in examples]
        probs = predict_probs(self.model, [self.encode(e.text) for e in examples], batch_size or self.batch_size, self.device)
        pred = probs.argmax(-1).tolist()
        return accuracy_scores(gold, pred, self.vocab.labels.items), [self.vocab.labels[p] for p in pred]

    def evaluate_file(self, path: str | Path, batch_size: int | None = None) -> tuple[dict, list[str]]:
        """Read a labelled JSONL/TSV/CSV file (format by extension, else the training format) and score it."""
        fmt = format_of(path, self.format if self.format in FORMATS else "jsonl")
        examples = read_labelled(path, fmt, self.text_field, self.label_field)
        found, pred = self.evaluate(examples, str(path), batch_size)
        found["file"] = str(path)
        return found, pred


EVALUATE_FLAGS = ("data",)


def evaluate(args: argparse.Namespace) -> tuple[dict, list[str], dict[str, list[str]]]:
    """`s2s evaluate` on a classification run: --data FILE or --split, scored by accuracy, macro-F1 and a confusion
    matrix. Returns the scores, the report's lines and the file to write (path -> lines) under args.hyp_prefix."""
    if len(args.model) > 1:
        raise S2SError("evaluate: several --model runs (an ensemble) work only for tagging runs")
    run = args.model[0]
    if bool(args.data) == bool(args.split):
        raise S2SError(f"evaluate: {run} is a classification run: give --data FILE or --split dev|test")
    classifier = Classifier.load(run, device=args.device)
    if args.data:
        scores, pred = classifier.evaluate_file(args.data, args.batch_size)
    else:
        config = classifier.config
        examples, where = read_split(config, getattr(config.data, args.split))
        scores, pred = classifier.evaluate(examples, where, args.batch_size)
        scores["file"] = where
    prefix = args.hyp_prefix
    scores["predictions"] = f"{prefix}.pred"
    labels = scores["labels"]
    report = [f"{scores['file']}: {scores['examples']} examples, labels {', '.join(labels)}"]
    for label, v in scores["per_label"].items():
        report.append(f"{label:<10} precision {v['precision']:6.2f}  recall {v['recall']:6.2f}  F1 {v['f1']:6.2f}  ({v['support']} gold)")
    width = max(7, *(len(label) + 1 for label in labels))
    report.append("confusion matrix (rows gold, columns predicted):")
    report.append(" " * width + "".join(f"{label:>{width}}" for label in labels))
    for label, row in zip(labels, scores["confusion"]):
        report.append(f"{label:<{width}}" + "".join(f"{n:>{width}}" for n in row))
    report.append(f"predictions (one label per line): {prefix}.pred")
    report.append(f"accuracy {scores['accuracy']:.2f}  macro-F1 {scores['macro_f1']:.2f}  ({scores['examples']} examples)")
    return scores, report, {f"{prefix}.pred": pred}
