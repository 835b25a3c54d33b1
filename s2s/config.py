"""Run configuration: the one schema, YAML in and out, typed `--set a.b=v` overrides, and every value rule.

A config has shared sections (data, vocab, encoder, train, decode) and one section per head
(translation, tagging, classification, forecasting). Each key belongs to every task or to the tasks its field
names; a key of another task, an unknown key, a wrong type or a bad value fails with one line
naming the key and what would be valid. `s2s config TASK` prints the complete default config of
a task (`describe`), with each key's help as a comment.

Run directories of s2s 0.1 kept a single `model` section; `upgrade_dict` maps them to this schema.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from s2s.errors import S2SError
from s2s.tasks import TASKS

ALL = tuple(TASKS)
TR, TAG, CLS, FC, PRE = ("translation",), ("tagging",), ("classification",), ("forecasting",), ("pretraining",)
TEXT = TR + TAG + CLS  # the tasks that read labelled text


def key(default: Any, help: str, tasks: tuple[str, ...] = ALL, choices: tuple = (), at_least: float | None = None,
        below: float | None = None, at_most: float | None = None, above: float | None = None) -> Any:
    """A config key: its default, its help (the comment `s2s config` prints), the tasks that use it and its value rules."""
    rules = {"choices": choices, "at_least": at_least, "below": below, "at_most": at_most, "above": above}
    return field(default=default, metadata={"help": help, "tasks": tasks, **rules})


MAX_SIZE = 1 << 16  # a bound on layer widths: beyond it a model no longer fits in any machine's memory


@dataclass(frozen=True)
class DataConfig:
    format: str = key("text", "text: {dir}/{split}.{src_lang|tgt_lang}; tsv | jsonl: one column per language; hub: a datasets hub set "
                      "(translation); conll (tagging); jsonl | tsv | csv (classification); csv (forecasting)",
                      choices=("text", "tsv", "jsonl", "hub", "conll", "csv"))
    dir: str = key("", "folder holding the split files")
    train: str = key("train", "split names: {dir}/{train}.*", TEXT)
    dev: str = key("val", "the split that selects the best checkpoint during training", TEXT)
    test: str = key("test2016", "the split `s2s evaluate --split test` scores", TEXT)
    file: str = key("ETTh1.csv", "the series: {dir}/{file}, a CSV with a timestamp column and numeric columns, split by rows", FC)
    time_column: str = key("date", "the CSV column holding the timestamps (ISO dates or numbers, strictly increasing)", FC)
    train_rows: int = key(8640, "the first N rows train (ETTh1's standard split: 12 months of 30 days)", FC, at_least=1)
    dev_rows: int = key(2880, "the next N rows select the best checkpoint (their windows look back into train)", FC, at_least=1)
    test_rows: int = key(2880, "the next N rows are `s2s evaluate --split test` (windows look back into dev)", FC, at_least=1)
    max_train: int = key(0, "keep only the first N training examples (0 = all; classification: after the dev hold-out; forecasting: windows)", at_least=0)
    max_dev: int = key(0, "score only the first N dev examples during training (0 = all)", TAG + CLS, at_least=0)
    max_len: int = key(100, "training examples longer than this many tokens (translation: subword tokens on either side) are skipped",
                       TR + TAG, at_least=1)
    hub: str = key("", "hub dataset name, e.g. bentrevett/multi30k (format: hub; needs the network)", TR)
    src_lang: str = key("de", "file suffix / column name of the source side", TR)
    tgt_lang: str = key("en", "file suffix / column name of the target side", TR)
    scheme: str = key("iob1", "tag scheme of the CoNLL files", TAG, choices=("iob1", "iob2", "bioes"))
    strict_tags: bool = key(False, "refuse tag slips (an I-X that cannot continue an entity) instead of reading them as conlleval does", TAG)
    text_field: str = key("text", "the JSON key / CSV column holding the text", CLS + PRE)
    label_field: str = key("label", "the JSON key / CSV column holding the label (any strings or numbers)", CLS)
    dev_size: int = key(0, "hold out this many training rows as the dev split (seeded by dev_seed); 0 = read {dir}/{dev}", CLS, at_least=0)
    dev_seed: int = key(1234, "seed of the dev hold-out, apart from train.seed so the split never moves", CLS)
    max_text_tokens: int = key(400, "longer texts are cut to this many word tokens (0 = no limit)", CLS, at_least=0)
    truncate: str = key("head_tail", "what a cut text keeps: head | tail | head_tail (first quarter + last three quarters)", CLS,
                        choices=("head", "tail", "head_tail"))


@dataclass(frozen=True)
class VocabConfig:
    joint: bool = key(False, "one SentencePiece model for both sides instead of one per side", TR)
    src_size: int = key(8000, "SentencePiece vocabulary sizes (an upper bound on tiny data)", TR, at_least=4)
    tgt_size: int = key(8000, "target side", TR, at_least=4)
    model_type: str = key("unigram", "SentencePiece model", TR, choices=("unigram", "bpe"))
    character_coverage: float = key(1.0, "share of characters SentencePiece covers", TR, at_least=0.5)
    max_sentences: int = key(300_000, "SentencePiece trains on a random sample of at most this many sentences per model", TR,
                             at_least=1)
    lowercase: bool = key(True, "words lowercased (tagging: digits mapped to 0 too; characters keep the case)", TAG + CLS + PRE)
    min_freq: int = key(1, "training words seen fewer times map to UNK", TAG + CLS + PRE, at_least=1)
    max_words: int = key(0, "keep only the N most frequent training words (0 = all with min_freq)", CLS + PRE, at_least=0)
    word_vectors: str = key("", "word2vec/GloVe text file (e.g. from `s2s vectors`): its words join the vocabulary and start their embeddings", TAG)


@dataclass(frozen=True)
class EncoderConfig:
    cell: str = key("lstm", "recurrent cell", choices=("lstm", "gru", "rnn"))
    emb_dim: int = key(256, "token embedding size (forecasting: the size each input row or segment is projected to)", at_least=1, at_most=MAX_SIZE)
    hidden_size: int = key(256, "hidden size per direction (states are 2 * hidden_size when bidirectional)", at_least=1, at_most=MAX_SIZE)
    num_layers: int = key(1, "stacked layers", at_least=1, at_most=64)
    bidirectional: bool = key(True, "run both directions")
    dropout: float = key(0.3, "on embeddings, between layers and on the states (classification: after pooling instead)", at_least=0, below=1)
    conv_filters: int = key(0, "1-D convolution before the RNN: output channels (0 = none; the CNN+RNN hybrid)", TEXT, at_least=0,
                            at_most=MAX_SIZE)
    conv_kernel: int = key(5, "its window in tokens (odd)", TEXT, at_least=1)
    conv_pool: int = key(2, "max-pooling stride after it: the RNN sees ceil(T / conv_pool) steps (tagging keeps every token)", TEXT,
                         at_least=1)
    init: str = key("", "a run of `s2s pretrain` (its folder or checkpoint): the embedding and encoder (and char-CNN) start from its "
                    "weights, words and characters mapped by string (docs/pretraining.md)", TAG + CLS)
    layer_lr_decay: float = key(1.0, "each layer below the head trains at train.lr / this ** depth (RNN top layer: depth 1, ..., "
                                "embeddings: num_layers + 1; ULMFiT's discriminative fine-tuning uses 2.6; 1 = one lr)", TAG + CLS, at_least=1)
    unfreeze: int = key(0, "gradual unfreezing: the layers of depth d (see layer_lr_decay) train from epoch d * N + 1 on, so the first "
                        "N epochs train the head alone (ULMFiT); 0 = everything trains from the start", TAG + CLS, at_least=0)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = key(1234, "random seed: weights, dropout and batch order")
    device: str = key("auto", "auto takes a CUDA GPU when there is one", choices=("auto", "cpu", "cuda"))
    threads: int = key(0, "torch CPU threads (0 = torch's default)", at_least=0)
    epochs: int = key(30, "passes over the training data", at_least=1)
    max_steps: int = key(0, "stop after this many updates (0 = no limit)", at_least=0)
    max_tokens: int = key(2000, "batch budget: examples * longest example, after padding", at_least=1)
    lr: float = key(1e-3, "Adam learning rate", above=0)
    clip: float = key(5.0, "gradient-norm clipping", above=0)
    scheduler: str = key("plateau", "plateau: decay when the dev score stalls; exponential: every epoch", choices=("plateau", "exponential", "none"))
    lr_decay: float = key(0.5, "factor of both schedulers", at_least=0, below=1)
    patience: int = key(1, "plateau: validations without improvement before the lr decays", at_least=0)
    min_lr: float = key(1e-5, "training stops once the lr falls below this", at_least=0)
    early_stopping: int = key(5, "stop after this many validations without improvement (0 = never)", at_least=0)
    valid_every: int = key(0, "validate every N updates too (0 = only at the end of each epoch)", at_least=0)
    log_every: int = key(100, "updates between progress log lines and metrics.jsonl records", at_least=1)
    save_every: float = key(10.0, "minutes between saves of last.pt besides those at validations (0 = only at validations)", at_least=0)
    amp: bool = key(True, "bf16 (fp16 + loss scaling on older GPUs) autocast when training on CUDA")
    cpu_amp: bool = key(False, "bf16 autocast when training on a CPU with native bf16 (AMX / AVX512-BF16)")
    ema: float = key(0.0, "decay of a moving average of the weights, validated and saved as best.pt (0 = off; e.g. 0.999); "
                     "it warms up: min(ema, (1 + n) / (10 + n)) after n updates", at_least=0, below=1)
    label_smoothing: float = key(0.1, "cross-entropy label smoothing", TR + CLS, at_least=0, below=1)
    word_dropout: float = key(0.0, "chance that a training word is replaced by UNK", TAG + CLS, at_least=0, below=1)
    unk_replace: float = key(0.0, "chance that a word seen once in training is replaced by UNK (Lample et al. 2016, sec. 4)", TAG,
                             at_least=0, at_most=1)
    trim_batches: bool = key(True, "cut each training batch's texts to the batch's shortest (see ClassificationTask.batch)", CLS)
    tensorboard: bool = key(False, "also write metrics.jsonl's values as TensorBoard event files in RUN/tensorboard "
                            "(needs tensorboard: pip install -e \".[tensorboard]\")")


@dataclass(frozen=True)
class DecodeConfig:
    batch_size: int = key(64, "sentences per prediction batch (beam search: in flight; the next start as others finish)", at_least=1)
    workers: int = key(0, "batches predicted at once, sharing the torch threads (0 = one per thread on a CPU, 1 on a GPU)", TR + TAG, at_least=0)
    amp: bool = key(False, "bf16 autocast while decoding, on CUDA or a CPU with native bf16 (outputs may differ slightly)", TR)


@dataclass(frozen=True)
class TranslationConfig:
    dec_hidden_size: int = key(512, "decoder LSTM size", TR, at_least=1, at_most=MAX_SIZE)
    dec_layers: int = key(1, "decoder layers", TR, at_least=1, at_most=64)
    attn_size: int = key(256, "Bahdanau attention's hidden layer", TR, at_least=1, at_most=MAX_SIZE)
    tie_embeddings: bool = key(True, "share the target embedding with the output projection", TR)
    beam_size: int = key(5, "beam size (1 = greedy)", TR, at_least=1)
    length_penalty: float = key(1.0, "alpha of GNMT's ((5 + len) / 6) ** alpha (Wu et al. 2016, eq. 14)", TR, at_least=0)
    max_len_a: float = key(1.5, "each output is cut at a * source length + b subword tokens", TR, at_least=0)
    max_len_b: int = key(10, "see max_len_a", TR, at_least=1)
    max_src_len: int = key(250, "longer inputs are truncated to this many subword tokens, with a warning", TR, at_least=1)
    valid_beam_size: int = key(1, "beam of the dev BLEU during training (greedy is fast)", TR, at_least=1)


@dataclass(frozen=True)
class TaggingConfig:
    tag_scheme: str = key("bioes", "the scheme the model predicts internally (files are converted on the fly)", TAG, choices=("bioes", "iob2"))
    crf: bool = key(True, "a linear-chain CRF on top (false: per-token softmax, still decoded to valid spans)", TAG)
    char_emb_dim: int = key(30, "character embedding size of the char-CNN", TAG, at_least=1, at_most=MAX_SIZE)
    char_filters: int = key(50, "char-CNN features per token (0 = no character features)", TAG, at_least=0, at_most=MAX_SIZE)
    char_kernel: int = key(3, "char-CNN window", TAG, at_least=1)
    case_dim: int = key(8, "word-shape (casing) embedding size (0 = none)", TAG, at_least=0, at_most=MAX_SIZE)
    context_tokens: int = key(0, "read consecutive sentences of a document together, up to this many tokens (0 = each sentence alone)", TAG, at_least=0)
    same_word_pooling: bool = key(False, "each token also gets the mean state of its word's other occurrences in its run", TAG)
    lm_vocab: int = key(0, "language-modelling side objective (Rei 2017) over this many frequent words (0 = off; needs a one-layer "
                        "bidirectional encoder)", TAG, at_least=0)
    lm_weight: float = key(0.1, "weight of that objective's loss", TAG, at_least=0)


@dataclass(frozen=True)
class ClassificationConfig:
    pooling: str = key("max+mean", "how the states become one vector; parts joined by +", CLS,
                       choices=("mean", "max", "last", "attention", "max+mean", "attention+max"))
    head_hidden: int = key(0, "hidden layer of the classifier (0 = one linear layer)", CLS, at_least=0, at_most=MAX_SIZE)
    attn_size: int = key(256, "attention pooling's hidden layer", CLS, at_least=1, at_most=MAX_SIZE)


@dataclass(frozen=True)
class PretrainingConfig:
    head: str = key("classification", "whose tokens, vocabulary and features the language model learns (the head it will start)", PRE,
                    choices=("classification", "tagging"))
    text: str = key("", "unlabelled text files under data.dir, separated by spaces: .jsonl (data.text_field of each line) or plain "
                    "text (one text per line)", PRE)
    conll: str = key("", "CoNLL files under data.dir whose tokens join the text, one text per document (separated by spaces)", PRE)
    bptt: int = key(100, "tokens per training window: the texts run end to end and are cut into windows, each read alone "
                    "(truncated backpropagation)", PRE, at_least=2, at_most=100_000)
    dev_every: int = key(250, "every Nth text is held out, for the dev perplexity", PRE, at_least=2)
    shortlist: int = key(2000, "adaptive softmax: the most frequent words scored in full at every token; the rest in clusters of "
                         "4x and the remaining words (Grave et al. 2017)", PRE, at_least=1)
    char_emb_dim: int = key(30, "head tagging: the char-CNN (as tagging.char_emb_dim ...), pretrained with the encoder", PRE, at_least=1,
                            at_most=MAX_SIZE)
    char_filters: int = key(50, "head tagging: char-CNN features per token (0 = none)", PRE, at_least=0, at_most=MAX_SIZE)
    char_kernel: int = key(3, "head tagging: char-CNN window", PRE, at_least=1)
    case_dim: int = key(8, "head tagging: word-shape embedding size (0 = none)", PRE, at_least=0, at_most=MAX_SIZE)


@dataclass(frozen=True)
class ForecastingConfig:
    seq_len: int = key(336, "look-back: rows each forecast reads", FC, at_least=1, at_most=100_000)
    horizon: int = key(96, "rows forecast at once", FC, at_least=1, at_most=100_000)
    features: str = key("multivariate", "multivariate: every numeric column in and out; univariate: the target column alone", FC,
                        choices=("multivariate", "univariate"))
    target: str = key("OT", "the univariate setting's column (and the one whose MAE evaluate also gives in original units)", FC)
    model: str = key("segrnn", "segrnn: each variable alone, cut into segments, last state -> all steps (Lin et al. 2023); "
                     "lstm: every variable at each step, last state -> all steps (the tutorials' recipe)", FC, choices=("segrnn", "lstm"))
    segment: int = key(48, "segrnn: rows per segment (a look-back of another length is padded at the front with its first row)", FC,
                       at_least=1, at_most=100_000)
    norm: str = key("last", "instance normalisation: subtract each window's last value or mean, add it back to the forecast", FC,
                    choices=("last", "mean", "none"))
    loss: str = key("mse", "training loss on the z-scored values", FC, choices=("mse", "mae"))
    decoder: str = key("linear", "segrnn: linear: the last state -> all steps by one linear layer; pmf: one more RNN step per "
                       "output segment from the last state, fed a learned position and variable embedding, each -> its "
                       "segment's rows (SegRNN's parallel multi-step forecasting); attention: the translation head's "
                       "Bahdanau attention decoder, one step per output segment over the encoder's segment states", FC,
                       choices=("linear", "pmf", "attention"))


@dataclass(frozen=True)
class Config:
    task: str = "translation"
    data: DataConfig = field(default_factory=DataConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    translation: TranslationConfig = field(default_factory=TranslationConfig)
    tagging: TaggingConfig = field(default_factory=TaggingConfig)
    classification: ClassificationConfig = field(default_factory=ClassificationConfig)
    forecasting: ForecastingConfig = field(default_factory=ForecastingConfig)
    pretraining: PretrainingConfig = field(default_factory=PretrainingConfig)

    @property
    def head(self):
        """The section of this config's task."""
        return getattr(self, self.task)


SHARED = ("data", "vocab", "encoder", "train", "decode")
# Defaults that differ by task: what a task's files are usually called and how they are read.
TASK_DEFAULTS = {
    "translation": {},
    "tagging": {"data.format": "conll", "data.dev": "valid", "data.test": "test", "data.max_len": 250},
    "classification": {"data.format": "jsonl", "data.dev": "dev", "data.test": "test"},
    "forecasting": {"data.format": "csv", "encoder.cell": "gru", "encoder.bidirectional": False, "encoder.emb_dim": 256,
                    "encoder.hidden_size": 256, "encoder.dropout": 0.1, "train.max_tokens": 256, "train.epochs": 20,
                    "train.early_stopping": 4, "train.log_every": 20, "decode.batch_size": 256},
    "pretraining": {"data.format": "text", "encoder.dropout": 0.1, "train.max_tokens": 8000, "train.early_stopping": 0,
                    "train.valid_every": 1000, "train.epochs": 1},
}
FORMATS = {"translation": ("text", "tsv", "jsonl", "hub"), "tagging": ("conll",), "classification": ("jsonl", "tsv", "csv"),
           "forecasting": ("csv",), "pretraining": ("text",)}


@functools.cache
def _sections() -> dict[str, type]:
    return {f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config) if f.name != "task"}


@functools.cache
def _fields(cls: type) -> dict[str, tuple[type, dict]]:
    types = typing.get_type_hints(cls)
    return {f.name: (types[f.name], f.metadata) for f in dataclasses.fields(cls)}


def owner(dotted: str) -> tuple[str, ...]:
    """The tasks a key belongs to ('data.scheme' -> ('tagging',))."""
    section, name = dotted.split(".")
    if section in TASKS:
        return (section,)
    return _fields(_sections()[section])[name][1]["tasks"]


@functools.cache
def _valid_keys(task: str | None) -> tuple[str, ...]:
    keys = ["task"]
    for name, cls in _sections().items():
        keys += [f"{name}.{k}" for k in _fields(cls) if task is None or task in owner(f"{name}.{k}")]
    return tuple(keys)


def valid_keys(task: str | None = None) -> list[str]:
    """Every key, or the keys of one task."""
    return list(_valid_keys(task))


def _unknown(key_: str, where: str, task: str) -> S2SError:
    moved = _legacy_key(key_, task)
    if moved != key_:
        return S2SError(f"{where}: key {key_!r} is {moved!r} since s2s 0.2; `s2s upgrade FILE` rewrites a config of s2s 0.1")
    if key_ in valid_keys():
        tasks = owner(key_)
        return S2SError(f"{where}: key {key_!r} belongs to task {' and '.join(tasks)}, not {task}")
    close = difflib.get_close_matches(key_, valid_keys(task), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return S2SError(f"{where}: unknown key {key_!r}; {hint}`s2s config {task}` lists every key of task {task}")


LARGEST_INT = 2**31 - 1  # beyond this no count, size or step of a run makes sense, and torch overflows


def _show(value: Any) -> str:
    """A value for an error message, on one line and short (Python refuses to print ints of over 4300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"{'-' if value < 0 else ''}an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _coerce(dotted: str, value: Any, want: type, rules: dict, where: str) -> Any:
    """Check (YAML) or convert (strings from --set) one value to the field's type, then its value rules."""
    if isinstance(value, str) and want is not str:
        text = value.strip().lower()
        try:
            if want is bool:
                value = {"true": True, "yes": True, "1": True, "on": True, "false": False, "no": False, "0": False, "off": False}.get(text, value)
            elif want is int:
                value = int(text)
            elif want is float:
                value = float(text)
        except ValueError:
            pass
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            raise S2SError(f"{where}: key '{dotted}' must be a finite number, got {_show(value)}") from None
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise S2SError(f"{where}: key '{dotted}' must be {want.__name__}, got {_show(value)}")
    if want is float and not math.isfinite(value):
        raise S2SError(f"{where}: key '{dotted}' must be a finite number, got {_show(value)}")
    if want is int and abs(value) > LARGEST_INT:
        raise S2SError(f"{where}: key '{dotted}' must be between {-LARGEST_INT} and {LARGEST_INT}, got {_show(value)}")
    if rules.get("choices") and value not in rules["choices"]:
        raise S2SError(f"{where}: key '{dotted}' must be one of {', '.join(rules['choices'])}, got {_show(value)}")
    if rules.get("at_least") is not None and value < rules["at_least"]:
        raise S2SError(f"{where}: key '{dotted}' must be at least {rules['at_least']}, got {_show(value)}")
    if rules.get("below") is not None and value >= rules["below"]:
        raise S2SError(f"{where}: key '{dotted}' must be below {rules['below']:g}, got {_show(value)}")
    if rules.get("above") is not None and value <= rules["above"]:
        raise S2SError(f"{where}: key '{dotted}' must be above {rules['above']:g}, got {_show(value)}")
    if rules.get("at_most") is not None and value > rules["at_most"]:
        raise S2SError(f"{where}: key '{dotted}' must be at most {rules['at_most']:g}, got {_show(value)}")
    return value


def _check_combinations(config: Config, where: str) -> None:
    """Rules that involve more than one key."""
    task, e = config.task, config.encoder
    if config.data.format not in FORMATS[task]:
        raise S2SError(f"{where}: task {task} reads data.format {' | '.join(FORMATS[task])}, got {config.data.format!r}")
    if e.conv_filters and e.conv_kernel % 2 == 0:
        raise S2SError(f"{where}: key 'encoder.conv_kernel' must be odd (the window is centred on each token), got {e.conv_kernel}")
    if config.tagging.lm_vocab:  # settable only in a tagging config
        if config.tagging.lm_vocab < 2:
            raise S2SError(f"{where}: key 'tagging.lm_vocab' must be 0 (off) or at least 2, got {config.tagging.lm_vocab}")
        # Deeper layers see both directions, so a forward state there has already seen the next word.
        if e.num_layers != 1 or not e.bidirectional:
            raise S2SError(f"{where}: key 'tagging.lm_vocab' needs a one-layer bidirectional encoder "
                           f"(encoder.num_layers is {e.num_layers}, encoder.bidirectional {e.bidirectional})")
    if task == "forecasting" and config.forecasting.decoder == "attention" and config.forecasting.model != "segrnn":
        raise S2SError(f"{where}: key 'forecasting.decoder' attention needs forecasting.model segrnn (it is {config.forecasting.model})")
    if task == "forecasting" and config.forecasting.decoder == "pmf":
        # Its decoding steps continue the encoder's own recurrence, which runs forward only.
        if config.forecasting.model != "segrnn" or e.bidirectional:
            raise S2SError(f"{where}: key 'forecasting.decoder' pmf needs forecasting.model segrnn and encoder.bidirectional false "
                           f"(they are {config.forecasting.model} and {str(e.bidirectional).lower()})")
    if task == "pretraining":
        # A deeper bidirectional layer reads both directions, so its forward state has already seen the next word.
        if e.num_layers != 1 and e.bidirectional:
            raise S2SError(f"{where}: a bidirectional language model needs a one-layer encoder (encoder.num_layers is {e.num_layers}); "
                           "set encoder.bidirectional: false for a deeper forward-only one")


def defaults(task: str) -> dict:
    """The default config of `task` as nested dicts, holding only that task's keys."""
    raw = to_dict(Config(task=task))
    for dotted, value in TASK_DEFAULTS[task].items():
        section, name = dotted.split(".")
        raw[section][name] = value
    return _only(raw, task)


def _only(raw: dict, task: str) -> dict:
    keys = set(valid_keys(task))
    out: dict = {"task": task}
    for section, values in raw.items():
        if isinstance(values, dict):
            kept = {k: v for k, v in values.items() if f"{section}.{k}" in keys}
            if kept:
                out[section] = kept
    return out


def from_dict(raw: dict, where: str = "config") -> Config:
    """Build a Config from nested dicts: the task's defaults, then `raw`, checked key by key."""
    if not isinstance(raw, dict):
        raise S2SError(f"{where}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    task = _coerce("task", raw.get("task", "translation"), str, {"choices": tuple(TASKS)}, where)
    for section, values in raw.items():  # an s2s 0.1 config: say so before any other complaint
        for k in values if isinstance(values, dict) else ():
            if _legacy_key(f"{section}.{k}", task) != f"{section}.{k}":
                raise _unknown(f"{section}.{k}", where, task)
    merged = defaults(task)
    sections = _sections()
    for name, values in raw.items():
        if name == "task":
            continue
        if name == "model":  # s2s 0.1's section: say where its first key lives now
            first = next(iter(values), None) if isinstance(values, dict) else None
            if first is not None:
                raise _unknown(f"model.{first}", where, task)
            raise S2SError(f"{where}: section 'model' is from s2s 0.1 (now 'encoder' and '{task}'); "
                           "`s2s upgrade FILE` rewrites a config or run directory")
        if name not in sections:
            raise _unknown(str(name), where, task)
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise S2SError(f"{where}: section '{name}' must be a mapping, got {values!r}")
        fields = _fields(sections[name])
        for k, v in values.items():
            dotted = f"{name}.{k}"
            if k not in fields or task not in owner(dotted):
                raise _unknown(dotted, where, task)
            merged.setdefault(name, {})[k] = _coerce(dotted, v, fields[k][0], fields[k][1], where)
    config = Config(task=task, **{name: sections[name](**merged.get(name, {})) for name in sections})
    _check_combinations(config, where)
    return config


def to_dict(config: Config) -> dict:
    """Every key, as nested dicts (see `task_dict` for one task's keys only)."""
    return dataclasses.asdict(config)


def task_dict(config: Config) -> dict:
    """The keys of the config's task, as nested dicts: what config.yaml and checkpoints hold."""
    return _only(to_dict(config), config.task)


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply `section.key=value` strings, typed by the field they set."""
    raw = task_dict(config)
    for item in overrides:
        dotted, sep, value = item.partition("=")
        if not sep:
            raise S2SError(f"--set {item!r}: expected key=value, e.g. train.lr=3e-4")
        parts = dotted.strip().split(".")
        if parts == ["task"]:
            if value.strip() != config.task:
                raise S2SError(f"--set task={value.strip()}: the task is the config file's ({config.task}); start from `s2s config {value.strip()}`")
            continue
        if len(parts) != 2:
            raise _unknown(dotted.strip(), "--set", config.task)
        raw.setdefault(parts[0], {})[parts[1]] = value
    return from_dict(raw, where="--set")


def read_yaml(path: Path) -> Any:
    """A YAML file's content (an empty file: an empty mapping); anything unreadable is one error line."""
    from s2s.data.io import read_text

    text = read_text(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).strip().splitlines()[0]
        raise S2SError(f"{path}{line}: invalid YAML ({problem})") from None
    except (RecursionError, ValueError) as e:  # nesting too deep, an integer of too many digits
        raise S2SError(f"{path}: invalid YAML ({type(e).__name__}: {str(e).splitlines()[0][:100]})") from None
    return {} if raw is None else raw


def load(path: str | Path, overrides: list[str] = ()) -> Config:
    path = Path(path)
    config = from_dict(read_yaml(path), where=str(path))
    return apply_overrides(config, list(overrides)) if overrides else config


def save(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(task_dict(config), sort_keys=False), encoding="utf-8")


def describe(task: str) -> str:
    """The complete default config of `task` as commented YAML (what `s2s config TASK` prints)."""
    if task not in TASKS:
        raise S2SError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    raw = defaults(task)
    lines = [f"# s2s train THIS.yaml --set data.dir=DATA --out runs/NAME   (every key of task {task}, with its default)",
             f"task: {task}"]
    sections = _sections()
    for name, values in raw.items():
        if name == "task":
            continue
        lines.append(f"{name}:")
        fields = _fields(sections[name])
        for k, v in values.items():
            value = yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()
            lines.append(f"  {k}: {value}  # {fields[k][1]['help']}")
    return "\n".join(lines) + "\n"


# s2s 0.1 kept the encoder's and every head's keys in one `model` section and the beam settings in `decode`.
_LEGACY_ENCODER = ("cell", "emb_dim", "hidden_size", "num_layers", "bidirectional", "dropout", "conv_filters", "conv_kernel", "conv_pool")
_LEGACY_TRANSLATION_DECODE = ("beam_size", "length_penalty", "max_len_a", "max_len_b", "max_src_len", "valid_beam_size")


def _legacy_key(dotted: str, task: str) -> str:
    """Where an s2s 0.1 key lives now ('model.cell' -> 'encoder.cell'); other keys as they are."""
    section, _, name = dotted.partition(".")
    if section == "model":
        return f"encoder.{name}" if name in _LEGACY_ENCODER else f"{task}.{name}"
    if section == "decode" and name in _LEGACY_TRANSLATION_DECODE:
        return f"translation.{name}"
    if dotted == "data.max_train_pairs":
        return "data.max_train"
    return dotted


def is_legacy(raw: Any) -> bool:
    """True for a config (nested dicts) that holds a key s2s 0.2 moved."""
    if not isinstance(raw, dict):
        return False
    task = raw.get("task", "translation")
    return any(_legacy_key(f"{section}.{k}", task) != f"{section}.{k}"
               for section, values in raw.items() if isinstance(values, dict) for k in values)


def upgrade_dict(raw: dict) -> dict:
    """An s2s 0.1 config (nested dicts) in this schema; keys its task never used are dropped (0.1 saved every key)."""
    task = raw.get("task", "translation")
    known = set(valid_keys(task))
    out: dict = {"task": task}
    for section, values in raw.items():
        if section == "task" or not isinstance(values, dict):
            continue
        for k, v in values.items():
            moved = _legacy_key(f"{section}.{k}", task)
            if moved in known:
                new_section, name = moved.split(".")
                out.setdefault(new_section, {})[name] = v
    return out


def read(raw: Any, where: str) -> Config:
    """A config as saved in a run directory or checkpoint, of this version or of s2s 0.1."""
    return from_dict(upgrade_dict(raw) if is_legacy(raw) else raw, where)


def load_run_config(path: str | Path) -> Config:
    """A run directory's config.yaml, of this version or of s2s 0.1."""
    path = Path(path)
    return read(read_yaml(path), str(path))


def upgrade_file(path: str | Path) -> bool:
    """Rewrite a config file of s2s 0.1 in this layout; False (untouched) when it is not one."""
    path = Path(path)
    raw = read_yaml(path)
    if not is_legacy(raw):
        return False
    save(read(raw, str(path)), path)
    return True
