"""Run configuration: frozen dataclasses, YAML in and out, typed `--set a.b=v` overrides.

Every key has one default, here. Unknown keys and wrong types fail with the key's
name and what would be valid, so a misspelled YAML key never goes unnoticed.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from s2s.errors import S2SError

TASKS = ("translation", "tagging", "classification")


@dataclass(frozen=True)
class DataConfig:
    format: str = "text"  # text: {dir}/{split}.{lang}; tsv|jsonl: {dir}/{split}.{tsv|jsonl} with one column per language; hub: `hub` names a datasets hub set; classification: jsonl|tsv|csv
    dir: str = ""  # folder holding the split files (format text|tsv|jsonl)
    hub: str = ""  # hub dataset name, e.g. bentrevett/multi30k (format hub; needs the network)
    src_lang: str = "de"  # file suffix / column name of the source side
    tgt_lang: str = "en"  # file suffix / column name of the target side
    train: str = "train"  # split names
    dev: str = "val"
    test: str = "test2016"
    max_train_pairs: int = 0  # keep only the first N training pairs (0 = all; classification: N rows after the dev hold-out); used by smoke runs
    max_len: int = 100  # training pairs longer than this many subword tokens on either side are skipped
    max_dev: int = 0  # tagging, classification: score only the first N dev sentences during training (0 = all); used by smoke runs
    scheme: str = "iob1"  # tagging: tag scheme of the CoNLL files (format conll: {dir}/{split}.txt); iob1 | iob2 | bioes
    text_field: str = "text"  # classification: the JSON key / CSV column holding the text
    label_field: str = "label"  # classification: the JSON key / CSV column holding the label (any strings or numbers)
    dev_size: int = 0  # classification: hold out this many training rows as the dev split (seeded by dev_seed); 0 = read {dir}/{dev}
    dev_seed: int = 1234  # classification: seed of the dev hold-out, kept apart from train.seed so the split never moves
    max_text_tokens: int = 400  # classification: longer texts are cut to this many word tokens (training and prediction)
    truncate: str = "head_tail"  # classification: keep the head | the tail | head_tail (first quarter + last three quarters)


@dataclass(frozen=True)
class VocabConfig:
    joint: bool = False  # one SentencePiece model for both sides instead of one per side
    src_size: int = 8000  # vocabulary sizes (an upper bound on tiny data)
    tgt_size: int = 8000
    model_type: str = "unigram"  # unigram | bpe
    character_coverage: float = 1.0
    lowercase: bool = True  # tagging: word vocabulary lowercased with digits mapped to 0 (characters keep the case); classification: text lowercased
    min_freq: int = 1  # tagging, classification: words seen fewer times in training map to UNK
    max_words: int = 0  # classification: keep only the N most frequent training words (0 = all with min_freq)
    word_vectors: str = ""  # tagging: word2vec/GloVe text file (e.g. from `s2s vectors`): its words join the vocabulary and initialise their embeddings


@dataclass(frozen=True)
class ModelConfig:
    cell: str = "lstm"  # encoder cell: lstm | gru | rnn
    emb_dim: int = 256
    hidden_size: int = 256  # encoder hidden size per direction (states are 2 * hidden_size)
    num_layers: int = 1  # encoder layers
    bidirectional: bool = True  # encoder runs both directions (False: forward only, states are hidden_size)
    dropout: float = 0.3  # on embeddings, between RNN layers and on encoder states (classification: on the pooled vector instead of the states, and in the head's hidden layer)
    dec_hidden_size: int = 512  # decoder LSTM size
    dec_layers: int = 1
    attn_size: int = 256  # Bahdanau attention's hidden layer (classification: attention pooling's)
    tie_embeddings: bool = True  # share the target embedding with the output projection
    char_emb_dim: int = 30  # tagging: character embedding size of the char-CNN
    char_filters: int = 50  # tagging: char-CNN output features per token (0 = no character features)
    char_kernel: int = 3  # tagging: char-CNN window
    case_dim: int = 8  # tagging: word-shape (casing) embedding size (0 = none)
    context_tokens: int = 0  # tagging: the encoder reads consecutive sentences of a document together, up to this many tokens (0 = each sentence alone)
    same_word_pooling: bool = False  # tagging: each token also gets the mean encoder state of its word's other occurrences in its run (see context_tokens)
    lm_vocab: int = 0  # tagging: language-modelling side objective (Rei 2017): forward states predict the next word, backward states the previous one, among this many frequent training words (0 = off; needs a one-layer bidirectional encoder)
    lm_weight: float = 0.1  # tagging: weight of that objective's loss next to the tagging loss
    crf: bool = True  # tagging: linear-chain CRF on top (False: per-token softmax, still decoded to valid spans)
    tag_scheme: str = "bioes"  # tagging: scheme the model predicts internally (files are converted on the fly)
    conv_filters: int = 0  # 1-D convolution front end before the RNN: output channels (0 = none; the CNN+RNN hybrid)
    conv_kernel: int = 5  # its window, in tokens (odd)
    conv_pool: int = 2  # max-pooling stride after it: the RNN sees ceil(T / conv_pool) steps
    pooling: str = "max+mean"  # classification: how encoder states become one vector: mean | max | last | attention | max+mean | attention+max
    head_hidden: int = 0  # classification: hidden layer of the classifier on the pooled vector (0 = one linear layer)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads (0 = torch's default)
    epochs: int = 30
    max_steps: int = 0  # stop after this many updates (0 = no limit)
    max_tokens: int = 2000  # batch budget: sentences * longest side, after padding
    lr: float = 1e-3
    clip: float = 5.0  # gradient-norm clipping
    label_smoothing: float = 0.1
    scheduler: str = "plateau"  # plateau | exponential | none
    lr_decay: float = 0.5  # factor for both schedulers (exponential: per epoch)
    patience: int = 1  # plateau: validations without improvement before the lr decays
    min_lr: float = 1e-5  # training stops once the lr falls below this
    early_stopping: int = 5  # stop after this many validations without improvement (0 = never)
    valid_every: int = 0  # validate every N updates (0 = once per epoch)
    log_every: int = 100  # updates between metrics-log lines
    amp: bool = True  # bf16 (fp16 + loss scaling on older GPUs) autocast when training on CUDA
    cpu_amp: bool = False  # bf16 autocast when training on a CPU with native bf16 (AMX/AVX512-BF16): ~1.3x faster, see README
    unk_replace: float = 0.0  # tagging: chance that a word seen once in training is replaced by UNK (Lample et al. 2016, sec. 4)
    trim_batches: bool = True  # classification: cut each training batch's texts to the batch's shortest (see ClassificationTask.batch)
    word_dropout: float = 0.0  # tagging, classification: chance that any training word is replaced by UNK (tagging: so the tagger leans on characters too)
    ema: float = 0.0  # decay of an exponential moving average of the weights, validated and saved as best.pt instead of the raw weights (0 = off; e.g. 0.999)


@dataclass(frozen=True)
class DecodeConfig:
    beam_size: int = 5  # 1 = greedy
    batch_size: int = 64  # sentences per decoding batch (beam search: in flight; the next start as others finish)
    length_penalty: float = 1.0  # alpha of GNMT's ((5 + len) / 6) ** alpha (Wu et al. 2016, eq. 14)
    max_len_a: float = 1.5  # each output is cut at a * source length + b subword tokens
    max_len_b: int = 10
    max_src_len: int = 250  # longer inputs are truncated to this many subword tokens, with a warning
    valid_beam_size: int = 1  # beam used for dev BLEU during training (greedy is fast)
    amp: bool = False  # bf16 autocast while decoding, on CUDA or a CPU with native bf16 (outputs may differ slightly)
    workers: int = 0  # batches decoded at once, each on threads / workers torch threads (0 = auto: one per thread on a CPU, 1 on a GPU)


@dataclass(frozen=True)
class Config:
    task: str = "translation"
    data: DataConfig = field(default_factory=DataConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


CHOICES = {
    "task": TASKS,
    "data.format": ("text", "tsv", "jsonl", "hub", "conll", "csv"),
    "data.truncate": ("head", "tail", "head_tail"),
    "model.pooling": ("mean", "max", "last", "attention", "max+mean", "attention+max"),
    "data.scheme": ("iob1", "iob2", "bioes"),
    "model.tag_scheme": ("bioes", "iob2"),
    "vocab.model_type": ("unigram", "bpe"),
    "model.cell": ("lstm", "gru", "rnn"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.scheduler": ("plateau", "exponential", "none"),
}
# Smallest values of integer keys where less has no meaning (a decoding batch of 0 sentences, a beam of 0).
AT_LEAST = {"decode.beam_size": 1, "decode.batch_size": 1, "decode.valid_beam_size": 1, "decode.max_src_len": 1}


def _sections() -> dict[str, type]:
    return {f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config) if f.name != "task"}


def _field_types(cls: type) -> dict[str, type]:
    return typing.get_type_hints(cls)


def valid_keys() -> list[str]:
    keys = ["task"]
    for name, cls in _sections().items():
        keys += [f"{name}.{k}" for k in _field_types(cls)]
    return keys


def _unknown(key: str, where: str) -> S2SError:
    close = difflib.get_close_matches(key, valid_keys(), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return S2SError(f"{where}: unknown key '{key}'; {hint}valid keys: {', '.join(valid_keys())}")


def _coerce(key: str, value: Any, want: type, where: str) -> Any:
    """Check (YAML) or convert (strings from --set) one value to the field's type."""
    if isinstance(value, str) and want is not str:
        text = value.strip().lower()
        try:
            if want is bool:
                if text in ("true", "yes", "1", "on"):
                    value = True
                elif text in ("false", "no", "0", "off"):
                    value = False
            elif want is int:
                value = int(text)
            elif want is float:
                value = float(text)
        except ValueError:
            pass
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise S2SError(f"{where}: key '{key}' must be {want.__name__}, got {value!r}")
    if key in CHOICES and value not in CHOICES[key]:
        raise S2SError(f"{where}: key '{key}' must be one of {', '.join(CHOICES[key])}, got {value!r}")
    if key in AT_LEAST and value < AT_LEAST[key]:
        raise S2SError(f"{where}: key '{key}' must be at least {AT_LEAST[key]}, got {value!r}")
    return value


def from_dict(raw: dict, where: str = "config") -> Config:
    """Build a Config from nested dicts, rejecting unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise S2SError(f"{where}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    sections = _sections()
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "task":
            kwargs["task"] = _coerce("task", value, str, where)
            continue
        if name not in sections:
            raise _unknown(str(name), where)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise S2SError(f"{where}: section '{name}' must be a mapping, got {value!r}")
        types = _field_types(sections[name])
        fields = {}
        for key, v in value.items():
            dotted = f"{name}.{key}"
            if key not in types:
                raise _unknown(dotted, where)
            fields[key] = _coerce(dotted, v, types[key], where)
        kwargs[name] = sections[name](**fields)
    return Config(**kwargs)


def to_dict(config: Config) -> dict:
    return dataclasses.asdict(config)


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply `section.key=value` strings, typed by the field they set."""
    raw = to_dict(config)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise S2SError(f"--set {item!r}: expected key=value, e.g. train.lr=3e-4")
        parts = key.strip().split(".")
        if parts == ["task"]:
            raw["task"] = value
            continue
        if len(parts) != 2 or parts[0] not in raw or parts[1] not in raw[parts[0]]:
            raise _unknown(key.strip(), "--set")
        raw[parts[0]][parts[1]] = value
    return from_dict(raw, where="--set")


def load(path: str | Path, overrides: list[str] = ()) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise S2SError(f"{path}: cannot read config ({e.strerror or e})") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise S2SError(f"{path}{line}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
    config = from_dict(raw, where=str(path))
    return apply_overrides(config, list(overrides)) if overrides else config


def save(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
