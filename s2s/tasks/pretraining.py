"""Pretraining (`s2s pretrain`): the shared embedding + encoder trained as a bidirectional language model on
unlabelled text, then loaded into a head with `encoder.init: RUN` (`init_encoder`).

The texts are read with the downstream head's own tokeniser and vocabulary rules (pretraining.head:
classification's `text_tokens`, or tagging's `tokenize` with its word normalisation, characters and word
shapes), run end to end with a boundary token between them, and cut into windows of pretraining.bptt
tokens, which the training loop batches and shuffles like any other examples. Each window is read alone:
the encoder starts every window from a zero state, so backpropagation is truncated at window edges (a
backward direction cannot carry its state from one window to the next in reading order anyway). Every
pretraining.dev_every-th text is held out, and the dev score is the perplexity of both directions on it.

The run directory holds pretraining_vocab.json (the words, and the characters for a tagging head) beside the
usual checkpoints; fine-tuning maps its rows to the head's vocabulary by string (Dai & Le 2015, Howard &
Ruder 2018 "ULMFiT"; Peters et al. 2017 for the bidirectional LM of a tagger).
"""
from __future__ import annotations

import argparse
import itertools
import logging
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from s2s import checkpoint, distributed
from s2s import config as config_lib
from s2s.config import Config
from s2s.data.batching import pad
from s2s.data.conll import iter_conll
from s2s.data.features import CASES, case_id, clip_word
from s2s.data.io import iter_file_lines
from s2s.data.labelled import texts_from_jsonl
from s2s.data.store import StoreWriter, TokenStore, file_digest, fingerprint
from s2s.data.tokenize import normalize, text_tokens, tokenize
from s2s.data.vocab import PAD, UNK, Vocabulary, load_json, save_json
from s2s.errors import S2SError
from s2s.nn import Output
from s2s.nn.chars import CharCNN
from s2s.nn.encoder import Encoder
from s2s.nn.lm import BidirectionalLM

log = logging.getLogger(__name__)

VOCAB_FILE = "pretraining_vocab.json"
BOUNDARY = "<s>"  # between two texts of the stream: what the forward LM predicts after a text's last token
STORE = "store"
CHUNK = 2_000  # texts read at a time


class LanguageModel(nn.Module):
    """The shared Encoder (with a tagger's char-CNN and word-shape embedding, for a tagging head) and the
    BidirectionalLM heads. Parameter names are those of the heads (encoder.*, chars.*, case_embed.*), so that
    `init_encoder` copies them across by name."""

    def __init__(self, encoder: Encoder, lm: BidirectionalLM, chars: CharCNN | None = None, case_dim: int = 0):
        super().__init__()
        self.encoder, self.lm, self.chars = encoder, lm, chars
        self.case_embed = nn.Embedding(len(CASES), case_dim, padding_idx=0) if case_dim else None

    def nll(self, batch: "LMBatch") -> tuple[torch.Tensor, torch.Tensor, int]:
        """Summed next- and previous-token NLLs of a batch, and the tokens each direction predicted."""
        features = []
        if self.chars is not None:
            features.append(self.chars(batch.chars))  # (B, T, F)
        if self.case_embed is not None:
            features.append(self.case_embed(batch.cases))  # (B, T, C)
        enc = self.encoder(batch.words, batch.lengths, torch.cat(features, dim=-1) if features else None)  # states (B, T, D)
        return self.lm(enc.states, batch.words, enc.mask)

    def forward(self, batch: "LMBatch") -> Output:
        next_nll, prev_nll, count = self.nll(batch)
        directions = 2 if self.lm.prev is not None else 1
        # The loss is the mean NLL per prediction (two per token with both directions); num_tokens counts the
        # tokens, so metrics.jsonl's tokens_per_s is text read per second.
        return Output((next_nll + prev_nll) / max(count * directions, 1), next_nll.new_zeros(0), count)


def build_model(config: Config, num_words: int, num_chars: int = 0) -> LanguageModel:
    e, p = config.encoder, config.pretraining
    tagging = p.head == "tagging"
    chars = CharCNN(num_chars, p.char_emb_dim, p.char_filters, p.char_kernel, e.dropout) if tagging and p.char_filters else None
    case_dim = p.case_dim if tagging else 0
    feature_dim = (p.char_filters if chars is not None else 0) + case_dim
    encoder = Encoder(num_words, e.emb_dim, e.hidden_size, e.num_layers, e.cell, e.dropout, e.bidirectional, feature_dim=feature_dim)
    return LanguageModel(encoder, BidirectionalLM(e.hidden_size, num_words, p.shortlist, e.bidirectional), chars, case_dim)


class LMBatch(NamedTuple):
    words: torch.Tensor  # (B, T) word ids, 0-padded
    lengths: torch.Tensor  # (B,)
    chars: torch.Tensor | None = None  # (B, T, C) character ids (tagging head)
    cases: torch.Tensor | None = None  # (B, T) word-shape ids (tagging head)

    def to(self, device: torch.device) -> "LMBatch":
        return LMBatch(*(x.to(device, non_blocking=True) if x is not None else None for x in self))


class LMVocab:
    """The pretraining vocabularies: words in the head's form (and characters for a tagging head)."""

    def __init__(self, head: str, words: list[str], chars: list[str], lowercase: bool):
        self.head, self.lowercase = head, lowercase
        self.words, self.chars = Vocabulary(words), Vocabulary(chars)

    def save(self, path: Path) -> None:
        save_json(path, {"head": self.head, "words": self.words.items, "chars": self.chars.items, "lowercase": self.lowercase})

    @classmethod
    def load(cls, path: Path) -> "LMVocab":
        data = load_json(path, ("head", "words", "chars", "lowercase"), "pretraining vocabulary")
        return cls(data["head"], data["words"], data["chars"], data["lowercase"])

    def word(self, token: str) -> str:
        """A raw token in the vocabulary's form (classification tokens come lowercased already)."""
        return normalize(token, self.lowercase) if self.head == "tagging" else token


def tokens_of(text: str, head: str, lowercase: bool) -> list[str]:
    """A text's tokens as the head reads them: classification's text_tokens, or tagging's tokenize (raw tokens)."""
    return tokenize(text)[0] if head == "tagging" else text_tokens(text, lowercase)


def _paths(config: Config, key: str) -> list[Path]:
    return [Path(config.data.dir) / name for name in getattr(config.pretraining, key).split()]


def iter_texts(config: Config) -> Iterator[list[str]]:
    """Every text of pretraining.text and pretraining.conll as tokens, in file order; blank texts are skipped."""
    p, lowercase = config.pretraining, config.vocab.lowercase
    for path in _paths(config, "text"):
        lines = iter_file_lines(path)
        first = 1
        while chunk := list(itertools.islice(lines, CHUNK)):
            texts = texts_from_jsonl(chunk, str(path), config.data.text_field, first) if path.suffix == ".jsonl" else chunk
            first += len(chunk)
            for text in texts:
                if tokens := tokens_of(text, p.head, lowercase):
                    yield tokens
    for path in _paths(config, "conll"):
        # One text per document; CoNLL tokens are already tokens (a classification head lowercases them).
        for _, sentences in itertools.groupby(iter_conll(path, tagged=False), key=lambda s: s.doc):
            tokens = [w for s in sentences for w in s.tokens]
            yield tokens if p.head == "tagging" or not lowercase else [w.lower() for w in tokens]


def split_texts(config: Config) -> Iterator[tuple[bool, list[str]]]:
    """(held out, tokens) per text: every pretraining.dev_every-th text is a dev text. With data.max_train the texts are
    read only up to the last of the first max_train training texts (the dev texts among them are held out)."""
    every, budget = config.pretraining.dev_every, config.data.max_train
    kept = 0
    for i, tokens in enumerate(iter_texts(config)):
        held = i % every == every - 1
        if not held:
            if budget and kept >= budget:
                return
            kept += 1
        yield held, tokens


def windows(texts: Iterator[list[str]], size: int) -> Iterator[list[str]]:
    """The texts end to end, each followed by BOUNDARY, cut into windows of `size` tokens (the last one shorter)."""
    buffer: list[str] = []
    for tokens in texts:
        buffer += tokens
        buffer.append(BOUNDARY)
        while len(buffer) >= size:
            yield buffer[:size]
            buffer = buffer[size:]
    if len(buffer) > 1:
        yield buffer


class Task:
    """Training data, model and dev perplexity for `s2s pretrain` (task: pretraining)."""

    metric = "perplexity"
    higher_is_better = False

    def __init__(self, config: Config, run_dir: Path, resume: bool = False):
        p, v = config.pretraining, config.vocab
        self.head, self.bptt = p.head, p.bptt
        files = _paths(config, "text") + _paths(config, "conll")
        if not files:
            raise S2SError("pretraining.text (or pretraining.conll) must name the files to learn from, under data.dir")
        vocab_path = run_dir / VOCAB_FILE
        if resume:
            self.vocab = LMVocab.load(vocab_path)
        else:
            words, chars = Counter(), Counter()
            for held, tokens in split_texts(config):
                if not held:
                    words.update(tokens if p.head == "classification" else (normalize(w, v.lowercase) for w in tokens))
                    if p.head == "tagging":
                        chars.update(itertools.chain.from_iterable(tokens))
            if not words:
                raise S2SError(f"{' '.join(map(str, files))}: no training text")
            self.vocab = LMVocab(p.head, Vocabulary.from_counts(words, v.min_freq, v.max_words, specials=(PAD, UNK, BOUNDARY)).items,
                                 [PAD, UNK] + sorted(chars), v.lowercase)
            self.vocab.save(vocab_path)
        key = {"data": fingerprint(*files), "vocab": file_digest(vocab_path),
               "settings": [p.head, p.bptt, p.dev_every, config.data.max_train, config.data.text_field, v.lowercase]}
        folder = run_dir / STORE
        self.store = distributed.open_or_build_store(folder, key, lambda: self.build_store(config, folder, key))
        self.lengths = self.store.lengths
        self.dev = list(windows((tokens for held, tokens in split_texts(config) if held), p.bptt))
        if not self.dev:
            raise S2SError(f"{' '.join(map(str, files))}: no dev text (every pretraining.dev_every={p.dev_every}th text is held out); "
                           "give more text or a smaller pretraining.dev_every")
        self.max_tokens = config.train.max_tokens
        log.info("%s: %d training windows of %d tokens (%d tokens), %d dev windows; %d words%s", " ".join(map(str, files)), len(self.store),
                 p.bptt, int(self.store.meta["tokens"]), len(self.dev), len(self.vocab.words),
                 f", {len(self.vocab.chars)} characters" if p.head == "tagging" else "")
        self.model = build_model(config, len(self.vocab.words), len(self.vocab.chars))

    def build_store(self, config: Config, folder: Path, key: dict) -> TokenStore:
        """The training windows as word ids (and their tokens as UTF-8, for a tagging head's characters and shapes)."""
        vocab, tagging = self.vocab, self.head == "tagging"
        fields = {"words": len(vocab.words)} | ({"text": 256} if tagging else {})
        writer = StoreWriter(folder, fields)
        tokens_total = 0
        try:
            stream = windows((tokens for held, tokens in split_texts(config) if not held), self.bptt)
            while chunk := list(itertools.islice(stream, CHUNK)):
                columns = {"words": [vocab.words.encode(vocab.word(w) for w in window) for window in chunk]}
                if tagging:  # tokens hold no whitespace (tokenize's and CoNLL's): joined by spaces, they split back exactly
                    columns["text"] = [" ".join(window).encode("utf-8") for window in chunk]
                writer.add(columns, [len(w) for w in chunk])
                tokens_total += sum(len(w) for w in chunk)
            if not writer.count:
                raise S2SError(f"{folder}: no training windows (no text outside the held-out texts)")
            writer.meta["tokens"] = tokens_total
            return writer.finish(key)
        except BaseException:
            writer.abort()
            raise

    def make_batch(self, words: list[list[int]], tokens: list[list[str]] | None) -> LMBatch:
        padded, lengths = pad(words)
        if tokens is None:
            return LMBatch(padded, lengths)
        vocab = self.vocab
        t = padded.size(1)
        chars = [[vocab.chars.encode(clip_word(w)) for w in row] for row in tokens]
        c = max(len(x) for row in chars for x in row)
        char_ids = torch.zeros(len(words), t, c, dtype=torch.long)
        for i, row in enumerate(chars):
            for j, x in enumerate(row):
                char_ids[i, j, : len(x)] = torch.tensor(x)
        cases = torch.tensor([[case_id(w) for w in row] + [0] * (t - len(row)) for row in tokens])
        return LMBatch(padded, lengths, char_ids, cases)

    def batch(self, indices: list[int]) -> LMBatch:
        words = self.store.get("words", indices)
        tokens = None
        if self.head == "tagging":
            tokens = [bytes(text).decode("utf-8").split(" ") for text in self.store.get("text", indices)]
        return self.make_batch(words, tokens)

    @torch.inference_mode()
    def validate(self, model: LanguageModel, device: torch.device) -> dict:
        """Perplexity of the held-out texts: exp of the mean NLL per predicted token, both directions, and each alone."""
        was_training = model.training
        model.eval()
        per_batch = max(self.max_tokens // self.bptt, 1)
        next_sum = prev_sum = 0.0
        count = 0
        try:
            for start in range(0, len(self.dev), per_batch):
                window = self.dev[start : start + per_batch]
                ids = [self.vocab.words.encode(self.vocab.word(w) for w in x) for x in window]
                batch = self.make_batch(ids, window if self.head == "tagging" else None).to(device)
                n, p, c = model.nll(batch)
                next_sum, prev_sum, count = next_sum + float(n), prev_sum + float(p), count + c
        finally:
            model.train(was_training)
        directions = 2 if model.lm.prev is not None else 1
        scores = {"perplexity": math.exp((next_sum + prev_sum) / max(count * directions, 1)),
                  "forward_perplexity": math.exp(next_sum / max(count, 1))}
        if directions == 2:
            scores["backward_perplexity"] = math.exp(prev_sum / max(count, 1))
        return scores


# -- fine-tuning: encoder.init

SHARED_KEYS = ("cell", "emb_dim", "hidden_size", "num_layers", "bidirectional")
# What a tagging head's keys are called in a pretraining config.
TAGGING_KEYS = ("char_emb_dim", "char_filters", "char_kernel", "case_dim")


def _mismatch(run: str, name: str, there, here, here_name: str | None = None) -> S2SError:
    return S2SError(f"encoder.init {run}: {name} is {there!r} there, {here!r} here" + (f" ({here_name})" if here_name else ""))


def check_compatible(run: str, pre: Config, config: Config) -> None:
    """Refuse a pretrained run whose encoder or tokenisation differs from this config's, naming the first key that does."""
    if pre.task != "pretraining":
        raise S2SError(f"encoder.init {run}: a {pre.task} run, not one of `s2s pretrain` (task: pretraining)")
    if pre.pretraining.head != config.task:
        raise _mismatch(run, "pretraining.head", pre.pretraining.head, config.task, "this run's task")
    for name in SHARED_KEYS:
        there, here = getattr(pre.encoder, name), getattr(config.encoder, name)
        if there != here:
            raise _mismatch(run, f"encoder.{name}", there, here)
    if config.encoder.conv_filters:
        raise _mismatch(run, "encoder.conv_filters", 0, config.encoder.conv_filters)
    if pre.vocab.lowercase != config.vocab.lowercase:
        raise _mismatch(run, "vocab.lowercase", pre.vocab.lowercase, config.vocab.lowercase)
    if config.task == "tagging":
        for name in TAGGING_KEYS:
            there, here = getattr(pre.pretraining, name), getattr(config.tagging, name)
            if (name == "char_emb_dim" or name == "char_kernel") and not (pre.pretraining.char_filters and config.tagging.char_filters):
                continue  # no char-CNN on one side: its other sizes do not matter
            if there != here:
                raise _mismatch(run, f"pretraining.{name}", there, here, f"tagging.{name}")


def _map_rows(target: torch.Tensor, source: torch.Tensor, target_items: list[str], source_ids: dict[str, int], skip: tuple[str, ...]) -> int:
    """Copy the rows of `source` into the rows of `target` whose string the source vocabulary has; returns how many."""
    pairs = [(i, source_ids[w]) for i, w in enumerate(target_items) if w in source_ids and w not in skip]
    if pairs:
        rows, src = map(list, zip(*pairs))
        target[rows] = source[src].to(target.dtype)
    return len(pairs)


@torch.no_grad()
def init_encoder(model: nn.Module, config: Config, words: list[str], chars: list[str] | None = None) -> dict:
    """Load the embedding, encoder (and a tagger's char-CNN and word-shape embedding) of the pretraining run
    config.encoder.init into `model`, a head of task config.task with vocabularies `words` (and `chars`): the rows
    of words and characters the run knows are copied by string, the others keep their initial values.
    Returns what was copied (for the log and tests)."""
    run = config.encoder.init
    path = checkpoint.find(run)
    payload = checkpoint.load(path)
    pre = config_lib.read(payload["config"], where=str(path))
    check_compatible(run, pre, config)
    vocab = LMVocab.load(checkpoint.run_dir_of(path) / VOCAB_FILE)
    weights, own = payload["model"], model.state_dict()
    copied = {"tensors": 0, "words": 0, "chars": 0}
    for name, value in weights.items():
        if not name.startswith(("encoder.", "chars.", "case_embed.")) or name not in own:
            continue
        if name == "encoder.embed.weight":
            # PAD stays zero; UNK rows are taken (both sides map unseen words to it).
            copied["words"] = _map_rows(own[name], value, words, vocab.words.ids, skip=(PAD,))
        elif name == "chars.embed.weight":
            copied["chars"] = _map_rows(own[name], value, chars or [], vocab.chars.ids, skip=(PAD,))
        elif own[name].shape != value.shape:
            raise S2SError(f"encoder.init {run}: {name} has shape {tuple(value.shape)} there, {tuple(own[name].shape)} here")
        else:
            own[name].copy_(value)
        copied["tensors"] += 1
    model.load_state_dict(own)
    log.info("encoder.init %s: %d tensors; %d of %d words%s start from it", run, copied["tensors"], copied["words"], len(words),
             f", {copied['chars']} of {len(chars)} characters" if chars else "")
    return copied


EVALUATE_FLAGS = ()


def evaluate(args: argparse.Namespace) -> tuple[dict, list[str], dict[str, list[str]]]:
    raise S2SError(f"evaluate: {args.model[0]} is a pretraining run; its dev perplexity is in metrics.jsonl. Fine-tune a head "
                   f"from it with --set encoder.init={args.model[0]}")


def layer_depth(name: str, num_layers: int) -> int:
    """How far below the head a parameter lies (encoder.layer_lr_decay, encoder.unfreeze): 0 for the head, 1 for
    the encoder RNN's top layer ... num_layers for its bottom one, num_layers + 1 for what feeds the RNN (the
    embedding, a conv front end, a tagger's char-CNN and word-shape embedding)."""
    if name.startswith("encoder.rnn."):
        layer = name.split("_l")[-1].split("_")[0]  # weight_ih_l0, bias_hh_l1_reverse
        return num_layers - int(layer)
    if name.startswith(("encoder.", "chars.", "case_embed.")):
        return num_layers + 1
    return 0


def depth_mask(model: nn.Module, num_layers: int, deepest: int) -> None:
    """Train only the parameters of depth <= `deepest` (gradual unfreezing); the others get no gradient."""
    for name, param in model.named_parameters():
        param.requires_grad_(layer_depth(name, num_layers) <= deepest)
