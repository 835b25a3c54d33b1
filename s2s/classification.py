"""The classification task: labelled text, the word vocabulary, the Classifier API, and
accuracy / macro-F1 / confusion-matrix evaluation.

Text becomes tokens by one rule (`tokenize`): HTML line breaks (`<br />`, common in IMDB) become
spaces, the text is lowercased (vocab.lowercase), and each token is a word with its inner
apostrophes ("don't") or a single punctuation mark ("!"). A text longer than
data.max_text_tokens is cut (data.truncate): its head, its tail, or head_tail = the first quarter
of the budget plus the last three quarters, since a review's verdict is often at its end
(Sun et al. 2019, "How to Fine-Tune BERT for Text Classification", sec. 5.3.1).

Labelled files (JSONL, TSV with a header and literal cells, CSV with a header and RFC 4180 quoting) are read with Python's json and csv
modules rather than HF datasets' loaders: those neither say which line is broken nor refuse a
CSV row with a missing field (it becomes None), and every problem here must name file and line.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from s2s import checkpoint
from s2s.config import Config
from s2s.data import read_text, split_lines
from s2s.device import resolve_device
from s2s.errors import S2SError
from s2s.models import TextClassifier, build_model

log = logging.getLogger(__name__)

PAD, UNK = "<pad>", "<unk>"
VOCAB_FILE = "classification_vocab.json"
FORMATS = ("jsonl", "tsv", "csv")
TOKEN_RE = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]", re.UNICODE)
BREAK_RE = re.compile(r"<br\s*/?>", re.IGNORECASE)


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    text = BREAK_RE.sub(" ", text)
    return TOKEN_RE.findall(text.lower() if lowercase else text)


def truncate(tokens: list[str], budget: int, mode: str = "head_tail") -> list[str]:
    """At most `budget` tokens of `tokens` (see the module docstring); budget 0 = no limit."""
    if not budget or len(tokens) <= budget:
        return tokens
    match mode:
        case "head":
            return tokens[:budget]
        case "tail":
            return tokens[-budget:]
    head = budget // 4
    return tokens[:head] + tokens[len(tokens) - (budget - head) :]


@dataclass
class Example:
    text: str
    label: str
    line: int  # 1-based line of the row in its file, for messages


def _label(value) -> str | None:
    """A label as a string: JSON 1 and CSV "1" are the same label."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def format_of(path: str | Path, default: str = "jsonl") -> str:
    """The file format by extension (.jsonl, .tsv, .csv), else `default`."""
    suffix = Path(path).suffix.lstrip(".").lower()
    return suffix if suffix in FORMATS else default


def _rows(path: Path, fmt: str, text: str):
    """(line, row dict) per record of a JSONL, TSV or CSV text; blank lines are not records."""
    if fmt == "jsonl":
        for number, raw in enumerate(split_lines(text), start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as e:
                raise S2SError(f"{path}:{number}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise S2SError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield number, row
        return
    if fmt not in ("tsv", "csv"):
        raise S2SError(f"{path}: unknown format {fmt!r} for labelled text; valid: {', '.join(FORMATS)}")
    # TSV cells are literal (no quoting, as in s2s.data); CSV follows RFC 4180 quoting.
    if fmt == "tsv":
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE, strict=True)
    else:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = None
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if header is None:
                header = [h.strip() for h in row]
                continue
            if len(row) != len(header):
                raise S2SError(f"{path}:{reader.line_num}: expected {len(header)} {fmt.upper()} fields ({', '.join(header)}), got {len(row)}")
            yield reader.line_num, dict(zip(header, row))
    except csv.Error as e:
        raise S2SError(f"{path}:{reader.line_num}: not a valid {fmt.upper()} row ({e})") from None


def read_labelled(path: str | Path, fmt: str, text_field: str = "text", label_field: str = "label") -> list[Example]:
    """Every row of a labelled file, checked: a row that cannot be parsed, or has no text or no
    label, fails with file:line and why. Nothing is skipped except blank lines."""
    path = Path(path)
    examples = []
    for number, row in _rows(path, fmt, read_text(path)):
        text = row.get(text_field)
        if not isinstance(text, str) or not text.strip():
            found = f"; keys: {', '.join(map(str, row))}" if text_field not in row else ""
            raise S2SError(f"{path}:{number}: no text in {text_field!r}{found}")
        label = _label(row.get(label_field))
        if label is None:
            found = f"; keys: {', '.join(map(str, row))}" if label_field not in row else f", got {row[label_field]!r}"
            raise S2SError(f"{path}:{number}: no label in {label_field!r}{found}")
        examples.append(Example(text, label, number))
    if not examples:
        raise S2SError(f"{path}: no labelled rows")
    return examples


def texts_from_jsonl(lines: list[str], where: str, text_field: str = "text") -> list[str]:
    """The texts of JSONL input to classify; a blank line gives an empty text (an empty output line)."""
    texts = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            texts.append("")
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            raise S2SError(f"{where}:{number}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            raise S2SError(f"{where}:{number}: expected a JSON object with a text field {text_field!r}")
        texts.append(row[text_field])
    return texts


def _sort_labels(labels: set[str]) -> list[str]:
    """Numeric labels in numeric order (0, 1, 2, 10), otherwise alphabetical."""
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


@dataclass
class Vocab:
    words: list[str]
    labels: list[str]

    def __post_init__(self):
        self.word_ids = {w: i for i, w in enumerate(self.words)}
        self.label_ids = {label: i for i, label in enumerate(self.labels)}

    @classmethod
    def build(cls, tokens: list[list[str]], labels: list[str], min_freq: int = 1, max_words: int = 0) -> "Vocab":
        counts = Counter(w for ts in tokens for w in ts)
        words = sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
        if max_words:
            words = words[:max_words]
        return cls([PAD, UNK] + words, _sort_labels(set(labels)))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"words": self.words, "labels": self.labels}, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "Vocab":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(data["words"], data["labels"])
        except FileNotFoundError:
            raise S2SError(f"{path}: no such file (the run directory lacks its classification vocabulary)") from None
        except (ValueError, KeyError, TypeError) as e:
            raise S2SError(f"{path}: not a classification vocabulary ({e})") from None

    def encode(self, tokens: list[str]) -> list[int]:
        """Word ids; a text without tokens (e.g. only "<br />") becomes one UNK."""
        unk = self.word_ids[UNK]
        return [self.word_ids.get(w, unk) for w in tokens] or [unk]

    def label_id(self, example: Example, where: str) -> int:
        found = self.label_ids.get(example.label)
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
    t = max(len(x) for x in ids)
    tokens = torch.tensor([x + [0] * (t - len(x)) for x in ids])
    return TextBatch(tokens, torch.tensor([len(x) for x in ids]), torch.tensor(labels if labels is not None else [0] * len(ids)))


def split_path(config: Config, split: str) -> Path:
    return Path(config.data.dir) / f"{split}.{config.data.format}"


def hold_out(examples: list[Example], size: int, seed: int, where: str) -> tuple[list[Example], list[Example]]:
    """(train, dev): the rows shuffled by `seed`, dev the first `size` of them, train the rest in that order."""
    if not 0 < size < len(examples):
        raise S2SError(f"{where}: data.dev_size={size} must be between 1 and the number of rows minus one ({len(examples) - 1})")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    return [examples[i] for i in order[size:]], [examples[i] for i in order[:size]]


class ClassificationTask:
    """Training data, model and dev scoring for `s2s train` with task: classification."""

    metric = "accuracy"

    def __init__(self, config: Config, run_dir: Path, resume: bool = False):
        data, v = config.data, config.vocab
        if data.format not in FORMATS:
            raise S2SError(f"task classification reads labelled text: set data.format to one of {', '.join(FORMATS)} (got {data.format!r})")
        train_path = split_path(config, data.train)
        train = read_labelled(train_path, data.format, data.text_field, data.label_field)
        if data.dev_size:
            train, dev = hold_out(train, data.dev_size, data.dev_seed, str(train_path))
            dev_where = str(train_path)  # held-out rows keep their line numbers in the training file
        else:
            dev_where = str(split_path(config, data.dev))
            dev = read_labelled(dev_where, data.format, data.text_field, data.label_field)
        if data.max_train_pairs:
            train = train[: data.max_train_pairs]
        if data.max_dev:
            dev = dev[: data.max_dev]

        tokens = [tokenize(e.text, v.lowercase) for e in train]
        vocab_path = run_dir / VOCAB_FILE
        if resume:
            self.vocab = Vocab.load(vocab_path)
        else:
            self.vocab = Vocab.build(tokens, [e.label for e in train], v.min_freq, v.max_words)
            self.vocab.save(vocab_path)
        vocab = self.vocab
        counts = Counter(e.label for e in train)
        log.info("%s: %d training rows (%s), %d dev rows; %d words", train_path, len(train),
                 ", ".join(f"{label}: {counts[label]}" for label in vocab.labels), len(dev), len(vocab.words))
        if len(vocab.labels) < 2:
            raise S2SError(f"{train_path}: the training rows have a single label ({vocab.labels[0]!r}); classification needs two or more")

        self.budget, self.mode = data.max_text_tokens, data.truncate
        self.ids = [vocab.encode(truncate(ts, self.budget, self.mode)) for ts in tokens]
        self.labels = [vocab.label_id(e, str(train_path)) for e in train]
        self.lengths = [len(x) for x in self.ids]
        self.dev_ids = [vocab.encode(truncate(tokenize(e.text, v.lowercase), self.budget, self.mode)) for e in dev]
        self.dev_labels = [vocab.label_id(e, dev_where) for e in dev]
        self.word_dropout, self.trim = config.train.word_dropout, config.train.trim_batches
        self.batch_size = config.decode.batch_size
        self.model = build_model(config, len(vocab.words), len(vocab.labels))

    def batch(self, indices: list[int]) -> TextBatch:
        ids = [self.ids[i] for i in indices]
        if self.trim:
            # On CPU, torch's RNN backward over a packed batch of unequal lengths is ~20x slower than
            # over equal lengths (torch 2.13: slice_backward fills a full-size gradient at every time
            # step). Batches group similar lengths, so cutting each text to the batch's shortest
            # (by data.truncate) drops few tokens: 0.4% of IMDB's with train.max_tokens=16000.
            shortest = min(len(x) for x in ids)
            ids = [truncate(x, shortest, self.mode) for x in ids]
        if self.word_dropout:
            unk = self.vocab.word_ids[UNK]
            ids = [[unk if random.random() < self.word_dropout else w for w in x] for x in ids]
        return make_batch(ids, [self.labels[i] for i in indices])

    def validate(self, model: TextClassifier, device: torch.device) -> dict:
        probs = predict_probs(model, self.dev_ids, self.batch_size, device)
        found = scores(self.dev_labels, probs.argmax(-1).tolist(), self.vocab.labels)
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


def scores(gold: list[int], pred: list[int], labels: list[str]) -> dict:
    """Accuracy, macro-F1 (over the labels that occur in gold or predictions, as scikit-learn does),
    per-label precision/recall/F1 and the confusion matrix (rows gold, columns predicted), in %."""
    k = len(labels)
    confusion = [[0] * k for _ in range(k)]
    for g, p in zip(gold, pred):
        confusion[g][p] += 1
    per_label, f1s = {}, []
    for i, label in enumerate(labels):
        tp = confusion[i][i]
        predicted = sum(confusion[j][i] for j in range(k))
        support = sum(confusion[i])
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {"precision": 100 * precision, "recall": 100 * recall, "f1": 100 * f1, "support": support}
        if predicted or support:
            f1s.append(f1)
    n = len(gold)
    return {
        "accuracy": 100 * sum(confusion[i][i] for i in range(k)) / n if n else 0.0,
        "macro_f1": 100 * sum(f1s) / len(f1s) if f1s else 0.0,
        "examples": n,
        "labels": list(labels),
        "confusion": confusion,
        "per_label": per_label,
    }


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


class Classifier:
    """Classify raw texts with a trained model: `Classifier.load(run_dir).predict(["A fine film."])`."""

    def __init__(self, model: TextClassifier, vocab: Vocab, config: Config, device: torch.device):
        self.model, self.vocab, self.device = model, vocab, device
        self.lowercase, self.budget, self.mode = config.vocab.lowercase, config.data.max_text_tokens, config.data.truncate
        self.text_field, self.label_field, self.format = config.data.text_field, config.data.label_field, config.data.format
        self.batch_size = config.decode.batch_size

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto") -> "Classifier":
        config, payload, path = checkpoint.load_trained(run_dir, "classification")
        vocab = Vocab.load(Path(run_dir) / VOCAB_FILE)
        model = build_model(config, len(vocab.words), len(vocab.labels))
        checkpoint.load_weights(model, payload, path)
        target = resolve_device(device)
        return cls(model.to(target).eval(), vocab, config, target)

    def encode(self, text: str) -> list[int]:
        return self.vocab.encode(truncate(tokenize(text, self.lowercase), self.budget, self.mode))

    def predict(self, texts: list[str], batch_size: int | None = None) -> list[Prediction | None]:
        """One prediction per text, in input order; None for an empty (or all-space) text."""
        todo = [i for i, t in enumerate(texts) if t.strip()]
        probs = predict_probs(self.model, [self.encode(texts[i]) for i in todo], batch_size or self.batch_size, self.device)
        out: list[Prediction | None] = [None] * len(texts)
        for i, row in zip(todo, probs.tolist()):
            best = max(range(len(row)), key=row.__getitem__)
            out[i] = Prediction(self.vocab.labels[best], row[best], dict(zip(self.vocab.labels, row)))
        return out

    def evaluate(self, examples: list[Example], where: str, batch_size: int | None = None) -> tuple[dict, list[str]]:
        """Scores (see `scores`) of the predictions on labelled examples read from `where`, and the
        predicted labels. A gold label the model does not know fails with file:line."""
        gold = [self.vocab.label_id(e, where) for e in examples]
        probs = predict_probs(self.model, [self.encode(e.text) for e in examples], batch_size or self.batch_size, self.device)
        pred = probs.argmax(-1).tolist()
        return scores(gold, pred, self.vocab.labels), [self.vocab.labels[p] for p in pred]

    def evaluate_file(self, path: str | Path, batch_size: int | None = None) -> tuple[dict, list[str]]:
        """Read a labelled JSONL/TSV/CSV file (format by extension, else the training format) and score it."""
        fmt = format_of(path, self.format if self.format in FORMATS else "jsonl")
        examples = read_labelled(path, fmt, self.text_field, self.label_field)
        found, pred = self.evaluate(examples, str(path), batch_size)
        found["file"] = str(path)
        return found, pred
