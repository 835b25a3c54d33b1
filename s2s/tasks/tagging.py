"""Tagging (N-vs-N): the shared encoder with character and casing features, a CRF (or constrained
softmax) on top, trained on CoNLL files and scored by exact entity span F1.

Raw text is tokenised by one rule that keeps character offsets (s2s.data.tokenize.tokenize).
"""
from __future__ import annotations

import argparse
import array
import copy
import hashlib
import html
import itertools
import json
import logging
import math
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from s2s import checkpoint, distributed
from s2s.config import Config, DecodeConfig
from s2s.data.conll import Sentence, gold_and_predicted, iter_conll, read_conll
from s2s.data.features import CASES, case_id, clip_word
from s2s.data.schemes import Span, allowed_transitions, convert, split_tag, spans, to_tags
from s2s.data.store import StoreWriter, TokenStore, fingerprint
from s2s.data.tokenize import normalize, tokenize
from s2s.data.vocab import PAD, UNK, Vocabulary, load_json, save_json
from s2s.data.word_vectors import init_embedding, read_word_vectors
from s2s.device import cpu_workers, parallel_map, resolve_device
from s2s.errors import S2SError
from s2s.metrics import span_scores
from s2s.nn import Output
from s2s.nn.chars import CharCNN
from s2s.nn.crf import CRF, Allowed, k_best, register_penalties, viterbi
from s2s.nn.encoder import Encoder
from s2s.nn.lm import NeighbourWordLM

log = logging.getLogger(__name__)

VOCAB_FILE = "tagging_vocab.json"
# A sentence longer than MAX_TOKENS is tagged in overlapping pieces of that many tokens, each deciding the
# entities that start in its middle (all but MARGIN tokens at either end), and a prediction batch holds at
# most BATCH_TOKENS padded tokens: memory stays bounded for any input (same-word pooling compares every
# pair of tokens of a run, T x T; a 1 MB line is some 200,000 tokens).
MAX_TOKENS = 1000
MARGIN = 100
BATCH_TOKENS = 16_000


class TagVocab:
    """A tagger's vocabularies: words (normalised), characters and tags (in the model's internal scheme)."""

    def __init__(self, words: list[str], chars: list[str], tags: list[str], lowercase: bool = True):
        self.words, self.chars, self.tags = Vocabulary(words), Vocabulary(chars), Vocabulary(tags)
        self.lowercase = lowercase
        self._features: dict[str, tuple[int, int, list[int]]] = {}  # token -> (word id, case id, char ids)

    def features(self, token: str) -> tuple[int, int, list[int]]:
        """(word id, case id, char ids) of a token, memoised: batching is on the tagging hot path."""
        found = self._features.get(token)
        if found is None:
            if len(self._features) > 200_000:
                self._features.clear()
            found = self._features[token] = (self.encode_words([token])[0], case_id(token), self.encode_chars(token))
        return found

    @classmethod
    def build(cls, sentences: Iterable[Sentence], scheme: str, target: str, lowercase: bool, min_freq: int, extra_words: list[str] = ()) -> "TagVocab":
        """Training words seen at least `min_freq` times, then `extra_words` (those of pretrained vectors) not yet in.
        One pass over `sentences`, which may be a stream."""
        counts, chars, types = Counter(), set(), set()
        for s in sentences:
            counts.update(normalize(w, lowercase) for w in s.tokens)
            chars.update(*s.tokens)
            types.update(kind for _, _, kind in spans(s.tags, scheme))
        words = Vocabulary.from_counts(counts, min_freq, extra=extra_words)
        prefixes = "BIES" if target == "bioes" else "BI"
        tags = ["O"] + [f"{p}-{k}" for k in sorted(types) for p in prefixes]  # every tag of every type, seen or not
        return cls(words.items, [PAD, UNK] + sorted(chars), tags, lowercase)

    def digest(self) -> str:
        """SHA-256 of the vocabularies, for keying what was built with them."""
        items = [self.words.items, self.chars.items, self.tags.items, self.lowercase]
        return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode("utf-8")).hexdigest()

    def save(self, path: Path) -> None:
        save_json(path, {"words": self.words.items, "chars": self.chars.items, "tags": self.tags.items, "lowercase": self.lowercase})

    @classmethod
    def load(cls, path: Path) -> "TagVocab":
        data = load_json(path, ("words", "chars", "tags", "lowercase"), "tagging vocabularies")
        return cls(data["words"], data["chars"], data["tags"], data["lowercase"])

    def encode_words(self, tokens: list[str]) -> list[int]:
        return self.words.encode(normalize(w, self.lowercase) for w in tokens)

    def encode_chars(self, token: str) -> list[int]:
        return self.chars.encode(clip_word(token))


class TagBatch(NamedTuple):
    """Sentences to tag, and the runs of running text the encoder reads them in (see `runs_of`):
    words/chars/cases/lengths/word_keys describe the runs, tags/positions/sentence_lengths the sentences."""

    words: torch.Tensor  # (R, T) word ids, 0-padded
    chars: torch.Tensor  # (R, T, C) character ids, 0-padded
    cases: torch.Tensor  # (R, T) word-shape ids (chars.CASES), 0 on padding
    lengths: torch.Tensor  # (R,) tokens per run
    word_keys: torch.Tensor  # (R, T) one id per distinct lowercased word of the batch (same_word_pooling), 0 on padding
    tags: torch.Tensor  # (S, L) tag ids per sentence, 0 on padding (masked out)
    positions: torch.Tensor  # (S, L) where each sentence token sits in the flattened (R * T) run tokens, 0 on padding
    sentence_lengths: torch.Tensor  # (S,)
    num_tokens: int
    lm_words: torch.Tensor | None = None  # (R, T) training only, tagging.lm_vocab: each run token's shortlist class, -100 on padding

    def to(self, device: torch.device) -> "TagBatch":
        return self._replace(**{k: v.to(device, non_blocking=True) for k, v in self._asdict().items() if isinstance(v, torch.Tensor)})


def runs_of(lengths: list[int], docs: list[int], max_tokens: int) -> list[list[int]]:
    """Consecutive non-empty sentences of one document grouped into runs of at most `max_tokens` tokens
    (a longer sentence is a run of its own; max_tokens 0: every sentence alone). The encoder reads a
    run as one text, so each sentence is tagged in the context of its neighbours."""
    runs: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, n in enumerate(lengths):
        if not n:
            continue
        if current and (docs[i] != docs[current[-1]] or size + n > max_tokens):
            runs.append(current)
            current, size = [], 0
        current.append(i)
        size += n
    if current:
        runs.append(current)
    return runs


def make_batch(
    vocab: TagVocab,
    tokens: list[list[str]],
    run_sizes: list[int] | None = None,
    words: list[list[int]] | None = None,
    tags: list[list[int]] | None = None,
) -> TagBatch:
    """A padded batch of non-empty sentences, read by the encoder in runs of `run_sizes` consecutive
    sentences each (default: each sentence alone); `words` may pass pre-encoded (e.g. UNK-replaced) word ids."""
    sizes = run_sizes or [1] * len(tokens)
    runs = [range(end - size, end) for end, size in zip(itertools.accumulate(sizes), sizes)]
    feats = [[vocab.features(w) for w in s] for s in tokens]
    run_lengths = [sum(len(tokens[i]) for i in run) for run in runs]
    t, longest = max(run_lengths), max(len(s) for s in tokens)
    c = max(len(f[2]) for fs in feats for f in fs)
    # Padded nested lists first, then one tensor each: far faster than filling tensors per token. The
    # characters, the biggest, go through one flat int64 array (torch.tensor parses nested lists slowly).
    word_rows, case_rows, key_rows, tag_rows, position_rows = [], [], [], [], []
    chars = array.array("q")
    no_chars = [0] * c
    keys: dict[str, int] = {}  # lowercased word -> key, from 1
    for r, run in enumerate(runs):
        pad = t - run_lengths[r]
        start = r * t
        word_row, case_row, key_row = [], [], []
        for i in run:
            fs = feats[i]
            key_row += [keys.setdefault(w.lower(), len(keys) + 1) for w in tokens[i]]
            word_row += words[i] if words is not None else [f[0] for f in fs]
            case_row += [f[1] for f in fs]
            for f in fs:
                chars.extend(f[2])
                chars.extend(no_chars[len(f[2]) :])
            tag_rows.append((tags[i] if tags is not None else [0] * len(fs)) + [0] * (longest - len(fs)))
            position_rows.append(list(range(start, start + len(fs))) + [0] * (longest - len(fs)))
            start += len(fs)
        word_rows.append(word_row + [0] * pad)
        case_rows.append(case_row + [0] * pad)
        chars.extend(no_chars * pad)
        key_rows.append(key_row + [0] * pad)
    sentence_lengths = torch.tensor([len(s) for s in tokens])
    return TagBatch(
        torch.tensor(word_rows), torch.frombuffer(chars, dtype=torch.int64).view(len(runs), t, c), torch.tensor(case_rows), torch.tensor(run_lengths),
        torch.tensor(key_rows), torch.tensor(tag_rows), torch.tensor(position_rows), sentence_lengths, int(sentence_lengths.sum()),
    )


class Decoded(NamedTuple):
    paths: list[list[int]]  # the best valid tag ids per sentence
    probs: list[list[float]]  # each chosen tag's probability (CRF: its marginal; 1.0 without scores)
    n_best: list[list[tuple[list[int], float]]] | None  # the n best valid tag id sequences and their probabilities
    marginals: list[list[list[float]]] | None  # p(tag k at token t) per sentence (L, K)


class TagDecoding:
    """Decoding shared by SequenceTagger and TaggerEnsemble: needs `emissions(batch)`, `crf` and,
    without a CRF, the penalty buffers of the scheme's forbidden transitions."""

    def decode(self, batch, with_scores: bool = True) -> tuple[list[list[int]], list[list[float]]]:
        """Best valid tag ids per sentence of a tagging.TagBatch and each chosen tag's probability (CRF: its marginal)."""
        return self.decode_all(batch, with_scores)[:2]

    @torch.inference_mode()
    def decode_all(self, batch, with_scores: bool = True, n_best: int = 0, marginals: bool = False) -> Decoded:
        """decode, and (n_best) the n most probable valid tag sequences per sentence with their probabilities, best
        first, and (marginals) each token's distribution over the tags. With a CRF both are exact (list Viterbi,
        forward-backward); without one, a sequence's probability is the product of its tokens' softmax probabilities."""
        logits, mask = self.emissions(batch)
        if self.crf is not None:
            paths = self.crf.decode(logits, mask)
            probs = self.crf.marginals(logits, mask) if with_scores or marginals else None
            found = self.crf.k_best(logits, mask, n_best) if n_best else None
        else:
            logp = logits.float().log_softmax(-1)
            paths = viterbi(logp, mask, self.trans_penalty, self.start_penalty, self.end_penalty)
            probs = logp.exp() if with_scores or marginals else None
            found = None
            if n_best:
                scores = [torch.full_like(p, -torch.inf).masked_fill(p == 0, 0.0) for p in (self.trans_penalty, self.start_penalty, self.end_penalty)]
                found = [[(path, math.exp(score)) for path, score in f] for f in k_best(logp, mask, *scores, n_best)]
        lengths = mask.sum(1).tolist()
        dists = [row[:n] for row, n in zip(probs.tolist(), lengths)] if marginals else None
        if not with_scores:
            return Decoded(paths, [[1.0] * len(p) for p in paths], found, dists)
        padded = torch.tensor([p + [0] * (logits.size(1) - len(p)) for p in paths], device=logits.device)
        picked = probs.gather(2, padded.unsqueeze(2)).squeeze(2).tolist()  # (B, T)
        return Decoded(paths, [row[: len(p)] for row, p in zip(picked, paths)], found, dists)


class SequenceTagger(TagDecoding, nn.Module):
    """N-vs-N tagging: char-CNN + casing features joined to the word embeddings in the shared
    Encoder, a linear layer to tag scores, and a CRF (or per-token softmax) on top
    (Lample et al. 2016; Ma & Hovy 2016)."""

    def __init__(
        self,
        encoder: Encoder,
        chars: CharCNN | None,
        case_dim: int,
        num_cases: int,
        num_tags: int,
        crf: CRF | None,
        allowed: Allowed | None = None,
        same_word_pooling: bool = False,
        lm: NeighbourWordLM | None = None,
        lm_weight: float = 0.0,
    ):
        super().__init__()
        self.encoder = encoder
        self.lm, self.lm_weight = lm, lm_weight
        self.chars = chars
        self.case_embed = nn.Embedding(num_cases, case_dim, padding_idx=0) if case_dim else None
        self.same_word_pooling = same_word_pooling
        self.proj = nn.Linear(encoder.output_size * (2 if same_word_pooling else 1), num_tags)
        self.crf = crf
        if crf is None:
            # Without a CRF, decoding is still constrained to valid spans: Viterbi over the
            # per-token log-probabilities with only the scheme's allowed transitions.
            register_penalties(self, num_tags, allowed)

    def emissions(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Tag scores (S, L, K) and mask (S, L) of a batch's sentences (a tagging.TagBatch): the encoder
        reads the batch's runs of text (R, T), and each sentence takes its tokens' states from its run."""
        return self.tag_scores(self.encode(batch), batch)

    def encode(self, batch) -> torch.Tensor:
        """Encoder states (R, T, D) of the batch's runs."""
        features = []
        if self.chars is not None:
            features.append(self.chars(batch.chars))  # (R, T, F)
        if self.case_embed is not None:
            features.append(self.case_embed(batch.cases))  # (R, T, C)
        return self.encoder(batch.words, batch.lengths, torch.cat(features, dim=-1) if features else None).states

    def tag_scores(self, states: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.same_word_pooling:
            states = torch.cat([states, self.pool_same_words(states, batch.word_keys)], dim=-1)
        logits = self.proj(states).flatten(0, 1)[batch.positions]  # (S, L, K)
        mask = torch.arange(logits.size(1), device=logits.device) < batch.sentence_lengths.unsqueeze(1)
        return logits, mask

    @staticmethod
    def pool_same_words(states: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Each token's mean state over the other occurrences of its word in the same run (zeros if none):
        a name that is clear in one sentence ("brewer Zywiec") informs its bare mentions elsewhere in the
        document. keys (R, T): one id per normalised word of the batch, 0 on padding."""
        same = (keys.unsqueeze(2) == keys.unsqueeze(1)) & (keys != 0).unsqueeze(2)  # (R, T, T)
        same &= ~torch.eye(keys.size(1), dtype=torch.bool, device=keys.device)
        counts = same.sum(2, keepdim=True).clamp(min=1)
        return torch.bmm(same.to(states.dtype), states) / counts

    def forward(self, batch) -> Output:
        states = self.encode(batch)
        logits, mask = self.tag_scores(states, batch)
        num_tokens = int(batch.num_tokens)
        if self.crf is not None:
            loss = self.crf.nll(logits, batch.tags, mask).sum()
        else:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), batch.tags.masked_fill(~mask, -100).flatten(), reduction="sum")
        if self.lm is not None and batch.lm_words is not None:
            loss = loss + self.lm_weight * self.lm(states, batch.lm_words)
        return Output(loss / max(num_tokens, 1), logits, num_tokens)


class TaggerEnsemble(TagDecoding, nn.Module):
    """Several taggers of one vocabulary and tag set decoded as one: the mean of their tag scores and of
    their CRF transition scores (docs/results.md)."""

    def __init__(self, members: list[SequenceTagger]):
        super().__init__()
        self.members = nn.ModuleList(members)
        first = members[0]
        self.crf = copy.deepcopy(first.crf)  # with its forbidden-transition masks; the scores become the mean
        if self.crf is not None:
            with torch.no_grad():
                for name in ("trans", "start", "end"):
                    getattr(self.crf, name).copy_(torch.stack([getattr(m.crf, name) for m in members]).mean(0))
        else:
            for name in ("trans_penalty", "start_penalty", "end_penalty"):
                self.register_buffer(name, getattr(first, name).clone())

    def emissions(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        scores = [m.emissions(batch) for m in self.members]
        return torch.stack([logits for logits, _ in scores]).mean(0), scores[0][1]


def build_model(config: Config, num_words: int, num_tags: int, num_chars: int = 0, tags: list[str] | None = None) -> SequenceTagger:
    """A tagger for `num_words` words, `num_chars` characters and the tags `tags` (None: any transition allowed)."""
    e, h = config.encoder, config.tagging
    chars = CharCNN(num_chars, h.char_emb_dim, h.char_filters, h.char_kernel, e.dropout) if h.char_filters else None
    feature_dim = (h.char_filters if chars is not None else 0) + h.case_dim
    # Tags are per token: a pooling front end would change the sequence length.
    encoder = Encoder(num_words, e.emb_dim, e.hidden_size, e.num_layers, e.cell, e.dropout, e.bidirectional,
                      feature_dim=feature_dim, conv_filters=e.conv_filters, conv_kernel=e.conv_kernel, conv_pool=1)
    allowed = None
    if tags is not None:
        allowed = tuple(torch.tensor(m, dtype=torch.bool) for m in allowed_transitions(tags, h.tag_scheme))
    crf = CRF(num_tags, allowed) if h.crf else None
    lm = NeighbourWordLM(e.hidden_size, h.lm_vocab) if h.lm_vocab else None
    return SequenceTagger(encoder, chars, h.case_dim, len(CASES), num_tags, crf, allowed, h.same_word_pooling, lm, h.lm_weight)


def conll_path(config: Config, split: str) -> Path:
    return Path(config.data.dir) / f"{split}.txt"


STORE = "store"  # the run directory's token store folder
CHUNK = 10_000  # sentences encoded at a time into the store


def training_sentences(config: Config, skipped: list[int] | None = None, warn: bool = True) -> Iterator[Sentence]:
    """The training file's sentences, read as needed: of the first data.max_train, those of at most data.max_len
    tokens (each longer one counted in `skipped`); warn=False: no warning about tag slips (read in another pass)."""
    data = config.data
    sentences = iter_conll(conll_path(config, data.train), data.scheme, strict=data.strict_tags, warn=warn)
    for s in itertools.islice(sentences, data.max_train or None):
        if len(s.tokens) <= data.max_len:
            yield s
        elif skipped is not None:
            skipped.append(s.line)


class Task:
    """Training data, model and dev scoring for `s2s train` with task: tagging.

    The training sentences live in a token store in the run directory (s2s.data.store): word ids, tag ids
    and the tokens' text (for characters and word shapes), with each sentence's document and the training
    word counts. The CoNLL file is read as a stream, once for the vocabularies and once into the store."""

    metric = "f1"
    higher_is_better = True

    def __init__(self, config: Config, run_dir: Path, resume: bool = False):
        data, m = config.data, config.tagging
        self.dev = read_conll(conll_path(config, data.dev), data.scheme, strict=data.strict_tags)
        if data.max_dev:
            self.dev = self.dev[: data.max_dev]
        self.scheme, self.decode, self.context_tokens = data.scheme, config.decode, m.context_tokens
        self.dev_path = conll_path(config, data.dev)
        if not self.dev:
            raise S2SError(f"{self.dev_path}: no dev sentences to validate on")
        train_path = conll_path(config, data.train)

        vocab_path = run_dir / VOCAB_FILE
        vectors = None
        if resume:
            self.vocab = TagVocab.load(vocab_path)  # embeddings come from the checkpoint
        else:
            if config.vocab.word_vectors:
                vectors = read_word_vectors(config.vocab.word_vectors, config.vocab.lowercase)
            extra = vectors[0] if vectors else []
            self.vocab = TagVocab.build(training_sentences(config, warn=False), data.scheme, m.tag_scheme, config.vocab.lowercase,
                                        config.vocab.min_freq, extra)
        v = self.vocab
        key = {"data": fingerprint(train_path), "vocab": v.digest(),
               "settings": [data.max_train, data.max_len, data.scheme, m.tag_scheme, data.strict_tags]}
        folder = run_dir / STORE
        self.store = distributed.open_or_build_store(folder, key, lambda: self.build_store(config, folder, key))
        log.info("%s: %d sentences; %d words, %d characters, %d tags", train_path, len(self.store), len(v.words), len(v.chars), len(v.tags))
        unknown = unknown_types(self.dev, data.scheme, v.tags)
        if unknown:
            (line, kind, tag), count = unknown
            log.warning("%s: %d entit%s of types the training data does not have (first at line %d: %r, tag %s); "
                        "dev F1 counts them as missed", self.dev_path, count, "ies" if count > 1 else "y", line, kind, tag)

        counts = self.store.arrays["word_counts"]
        self.singletons = set(np.flatnonzero(counts == 1).tolist())
        # tagging.lm_vocab: the side objective's classes, the lm_vocab - 1 most frequent training words (1, 2, ...)
        # and 0 for every other word (none without the side objective: nothing to sort at start-up).
        seen = np.flatnonzero(counts)
        frequent = seen[np.lexsort((seen, -counts[seen]))][: m.lm_vocab - 1].tolist() if m.lm_vocab > 0 else []
        self.lm_class = {w: i + 1 for i, w in enumerate(frequent)}
        self.unk_replace = config.train.unk_replace
        self.word_dropout = config.train.word_dropout
        # The training examples are runs of consecutive sentences (tagging.context_tokens; 0: single sentences).
        sentence_lengths = self.store.lengths.tolist()
        self.runs = runs_of(sentence_lengths, self.store.arrays["docs"].tolist(), m.context_tokens)
        self.lengths = [sum(sentence_lengths[i] for i in run) for run in self.runs]
        self.model = build_model(config, len(v.words), len(v.tags), len(v.chars), v.tags)
        if vectors:
            found = init_embedding(self.model.encoder.embed.weight, v.words.items, *vectors, pad_id=v.words.ids[PAD])
            log.info("%s: %d vectors of dimension %d; %d of %d vocabulary words start from one",
                     config.vocab.word_vectors, len(vectors[0]), vectors[1].size(1), found, len(v.words))
        if config.encoder.init and not resume:  # after the vectors: a pretrained word's row wins; a resumed run reads last.pt
            from s2s.tasks.pretraining import init_encoder

            init_encoder(self.model, config, v.words.items, v.chars.items)
        if not resume:
            v.save(vocab_path)  # once the model is built: a config error leaves no half-made run behind

    def build_store(self, config: Config, folder: Path, key: dict) -> TokenStore:
        """Encode the training sentences into a token store: words, tags (in tagging.tag_scheme) and the tokens as UTF-8."""
        v, data, target = self.vocab, config.data, config.tagging.tag_scheme
        writer = StoreWriter(folder, {"words": len(v.words), "tags": len(v.tags), "text": 256})
        skipped: list[int] = []
        docs: list[int] = []
        counts = np.zeros(len(v.words), dtype=np.int64)
        try:
            sentences = training_sentences(config, skipped)
            while chunk := list(itertools.islice(sentences, CHUNK)):
                words = [v.encode_words(s.tokens) for s in chunk]
                counts += np.bincount(np.fromiter(itertools.chain.from_iterable(words), dtype=np.int64), minlength=len(v.words))
                # CoNLL tokens hold no whitespace: joined by spaces, they split back exactly.
                writer.add({"words": words, "tags": [v.tags.encode(convert(s.tags, data.scheme, target)) for s in chunk],
                            "text": [" ".join(s.tokens).encode("utf-8") for s in chunk]}, [len(s.tokens) for s in chunk])
                docs += (s.doc for s in chunk)
            if not writer.count:
                raise S2SError(f"{conll_path(config, data.train)}: no training sentences")
            writer.arrays.update(docs=np.asarray(docs, dtype=np.int64), word_counts=counts)
            store = writer.finish(key)
        except BaseException:
            writer.abort()
            raise
        if skipped:
            log.warning("%s: skipped %d sentences longer than data.max_len=%d tokens (the first at line %d)", conll_path(config, data.train),
                        len(skipped), data.max_len, skipped[0])
        return store

    def batch(self, indices: list[int]) -> TagBatch:
        """The batch of the runs `indices` (see runs_of)."""
        unk = self.vocab.words.unk
        sentences = [i for r in indices for i in self.runs[r]]
        original = self.store.get("words", sentences)
        words = original
        if self.unk_replace:
            # Words seen once stand in for unseen ones, so the UNK embedding gets trained.
            words = [[unk if w in self.singletons and random.random() < self.unk_replace else w for w in s] for s in words]
        if self.word_dropout:
            words = [[unk if random.random() < self.word_dropout else w for w in s] for s in words]
        tokens = [bytes(text).decode("utf-8").split(" ") for text in self.store.get("text", sentences)]
        batch = make_batch(self.vocab, tokens, [len(self.runs[r]) for r in indices], words, self.store.get("tags", sentences))
        if not self.lm_class:
            return batch
        # The language-modelling targets are the words as written, not the UNK-replaced inputs.
        t = batch.words.size(1)
        rows, start = [], 0
        for r in indices:
            run = original[start : start + len(self.runs[r])]
            start += len(self.runs[r])
            rows.append([self.lm_class.get(w, 0) for s in run for w in s])
        return batch._replace(lm_words=torch.tensor([row + [-100] * (t - len(row)) for row in rows]))

    def validate(self, model: SequenceTagger, device: torch.device) -> dict:
        tagger = Tagger(model, self.vocab, self.decode, device, context_tokens=self.context_tokens)
        scores, _ = tagger.evaluate(self.dev, self.scheme, check_types=False)  # warned about in __init__
        return {"f1": scores["micro"]["f1"], "precision": scores["micro"]["precision"], "recall": scores["micro"]["recall"]}


def entity_types(tags: list[str] | Vocabulary) -> list[str]:
    """The entity types of a tag set ('PER' of 'B-PER'), sorted."""
    return sorted({split_tag(t)[1] for t in tags} - {""})


def unknown_types(gold: list[Sentence], scheme: str, tags: list[str] | Vocabulary) -> tuple[tuple[int, str, str], int] | None:
    """((line, type, tag) of the first gold entity of a type not in `tags`, how many such entities), or None."""
    known = set(entity_types(tags))
    first, count = None, 0
    for s in gold:
        for start, _, kind in spans(s.tags, scheme):
            if kind not in known:
                count += 1
                first = first or (s.line + start, kind, s.tags[start])
    return (first, count) if count else None


def tagged_conll(lines: list[str], sentences: list[Sentence], records: list["Tagged"], scheme: str = "iob2") -> list[str]:
    """CoNLL input lines (read by parse_conll(lines, tagged=False) into `sentences`, tagged into `records`) with
    each token line's predicted tag last: token [POS [chunk]] tag, where a 4th input column (a gold tag) is
    replaced. -DOCSTART- and blank lines stay where they were: output line n is input line n."""
    out = [raw.strip() if raw.split()[:1] == ["-DOCSTART-"] else "" for raw in lines]
    for s, r in zip(sentences, records, strict=True):
        for j, tag in enumerate(r.tags(scheme)):
            out[s.line - 1 + j] = " ".join([*lines[s.line - 1 + j].split()[:3], tag])
    if out and out[-1]:
        out.append("")  # the last sentence ends with a blank line, as every other does
    return out


def _no_string(items, method: str, what: str) -> list:
    """`items` as a list; a bare string is refused, not read as a list of one-character sentences."""
    if isinstance(items, (str, bytes)):
        raise TypeError(f"{method} takes a list of {what}, got a string: pass [sentence] for one")
    return list(items)


@dataclass
class Entity:
    text: str
    type: str
    start: int  # token offsets, end exclusive
    end: int
    char_start: int  # character offsets into the sentence text, end exclusive
    char_end: int
    score: float  # mean probability of the entity's tags (CRF: marginals)


@dataclass
class Reading:
    """One of the n best tag sequences of a sentence."""

    prob: float  # p(tags | sentence): CRF, exact; without a CRF, the product of the tokens' softmax probabilities
    tags: list[str]  # IOB2
    entities: list[Entity]


@dataclass
class Tagged:
    """One tagged sentence (an empty input line gives an empty one)."""

    text: str
    tokens: list[str] = field(default_factory=list)
    offsets: list[tuple[int, int]] = field(default_factory=list)
    entities: list[Entity] = field(default_factory=list)
    n_best: list[Reading] | None = None  # asked for (Tagger.tag n_best=K): the K most probable readings, best first
    marginals: list[dict[str, float]] | None = None  # asked for: per token, p(tag) of each of the model's tags

    def tags(self, scheme: str = "iob2") -> list[str]:
        return to_tags([(e.start, e.end, e.type) for e in self.entities], len(self.tokens), scheme)

    def to_json(self) -> str:
        out = {"text": self.text, "tokens": self.tokens, "entities": [asdict(e) for e in self.entities]}
        if self.n_best is not None:
            out["n_best"] = [asdict(r) for r in self.n_best]
        if self.marginals is not None:
            out["marginals"] = self.marginals
        return json.dumps(out, ensure_ascii=False)

    def to_inline(self) -> str:
        """`[PER Alan Shearer] was named ...`: the text with each entity bracketed with its type."""
        out, pos = [], 0
        for e in self.entities:
            out += [self.text[pos : e.char_start], f"[{e.type} {self.text[e.char_start : e.char_end]}]"]
            pos = e.char_end
        return "".join(out + [self.text[pos:]])

    def to_html(self, colours: dict[str, str]) -> str:
        """One <p>: the text HTML-escaped, each entity in a <mark> of its type's colour (see html_page)."""
        out, pos = [], 0
        for e in self.entities:
            kind = html.escape(e.type)
            out += [html.escape(self.text[pos : e.char_start]), f'<mark style="background:{colours.get(e.type, "#e5e7eb")}" '
                    f'data-type="{kind}" title="{kind} {e.score:.2f}">{html.escape(self.text[e.char_start : e.char_end])}</mark>']
            pos = e.char_end
        return "<p>" + "".join(out + [html.escape(self.text[pos:])]) + "</p>"

    def to_conll(self, scheme: str = "iob2") -> list[str]:
        """Token and tag columns, then a blank line (only the blank line for an empty sentence)."""
        return [f"{t} {g}" for t, g in zip(self.tokens, self.tags(scheme))] + [""]


# Light colours that dark text reads well on, one per entity type (in the order of the sorted types, cycling).
PALETTE = ("#fde68a", "#bfdbfe", "#bbf7d0", "#fecaca", "#ddd6fe", "#fed7aa", "#a5f3fc", "#fbcfe8", "#d9f99d", "#e5e7eb")


def entity_colours(types: list[str]) -> dict[str, str]:
    return {kind: PALETTE[i % len(PALETTE)] for i, kind in enumerate(sorted(types))}


def html_page(colours: dict[str, str]) -> tuple[list[str], list[str]]:
    """The lines before and after the sentences of `s2s tag --format html` (a <p> each, Tagged.to_html): a page
    whose legend names each type's colour and whose marks show their type after the text (CSS, not text)."""
    legend = " ".join(f'<mark style="background:{c}" data-type="{html.escape(k)}"></mark>' for k, c in colours.items())
    head = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8"><title>s2s tag</title>',
            "<style>body{font-family:sans-serif;line-height:2}mark{padding:.1em .3em;border-radius:.3em}"
            "mark::after{content:attr(data-type);font-size:.65em;font-weight:bold;margin-left:.4em}</style>",
            "</head><body>", f'<div class="legend">{legend}</div>']
    return head, ["</body></html>"]


class Tagger:
    """Tag named entities with a trained model: `Tagger.load(run_dir).tag(["Alan Shearer was named ..."])`."""

    def __init__(
        self, model: SequenceTagger | TaggerEnsemble, vocab: TagVocab, decode: DecodeConfig, device: torch.device, file_scheme: str = "iob1", context_tokens: int = 0
    ):
        self.model, self.vocab, self.decode, self.device = model, vocab, decode, device
        self.file_scheme = file_scheme  # tag scheme of the CoNLL files the model was trained on
        self.context_tokens = context_tokens  # tagging.context_tokens it was trained with
        self.scheme = "bioes" if any(t.startswith(("E-", "S-")) for t in vocab.tags) else "iob2"

    @classmethod
    def load(cls, run_dirs: str | Path | list[str | Path], device: str = "auto", workers: int | None = None) -> "Tagger":
        """A trained tagger; several run directories (same data, vectors and tagging.context_tokens,
        e.g. different train.seed) make an ensemble that averages their scores. workers, when given,
        replaces decode.workers (batches tagged at once; 0 = one per CPU thread)."""
        run_dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
        if not run_dirs:
            raise S2SError("no tagging model given")
        members = []
        for run_dir in run_dirs:
            config, payload, path = checkpoint.load_trained(run_dir, "tagging")
            vocab = TagVocab.load(path.parent / VOCAB_FILE)
            model = build_model(config, len(vocab.words), len(vocab.tags), len(vocab.chars), vocab.tags)
            members.append(checkpoint.load_weights(model, payload, path))
            setup = (vocab.words, vocab.chars, vocab.tags, vocab.lowercase, config.tagging.context_tokens, config.tagging.crf, config.data.scheme)
            if len(members) == 1:
                first_vocab, first_config, first_setup = vocab, config, setup
            elif setup != first_setup:
                raise S2SError(f"{run_dir}: cannot join an ensemble with {run_dirs[0]}: the vocabularies, tags, "
                               "tagging.context_tokens, tagging.crf or data.scheme differ (train members on the same data and vectors)")
        vocab, config = first_vocab, first_config
        model = members[0] if len(members) == 1 else TaggerEnsemble(members)
        target = resolve_device(device)
        decode = config.decode if workers is None else replace(config.decode, workers=workers)
        return cls(model.to(target).eval(), vocab, decode, target, config.data.scheme, config.tagging.context_tokens)

    def tag_tokens(
        self, sentences: list[list[str]], batch_size: int | None = None, with_scores: bool = True, docs: list[int] | None = None
    ) -> list[list[tuple[Span, float]]]:
        """Entity spans with scores per tokenised sentence, in input order; [] for an empty one.
        `docs` numbers each sentence's document (default: all one); a model trained with
        tagging.context_tokens reads consecutive sentences of a document together. A sentence
        longer than MAX_TOKENS is tagged in overlapping pieces of that many tokens, with a warning
        (see _tag_pieces): memory stays bounded."""
        sentences = _no_string(sentences, "Tagger.tag_tokens", "tokenised sentences")
        if any(isinstance(s, (str, bytes)) for s in sentences):
            raise TypeError("Tagger.tag_tokens takes a list of tokenised sentences (each a list of tokens), got a string "
                            "among them: Tagger.tag tags raw text")
        return self._tag_tokens(sentences, batch_size, with_scores, docs)

    def _tag_tokens(self, sentences: list[list[str]], batch_size: int | None = None, with_scores: bool = True,
                    docs: list[int] | None = None, lines: list[int] | None = None, n_best: int = 0, marginals: bool = False,
                    extras: list | None = None) -> list[list[tuple[Span, float]]]:
        """tag_tokens; `lines` numbers each sentence's input line, for the warning about long ones. With n_best or
        marginals, `extras` receives per sentence (its n best tag id sequences with their probabilities or None,
        its tokens' tag distributions (L, K) or None): see SequenceTagger.decode_all."""
        batch_size = batch_size or self.decode.batch_size
        docs = docs or [0] * len(sentences)
        long = [i for i, s in enumerate(sentences) if len(s) > MAX_TOKENS]
        if long:
            first = f"line {lines[long[0]]}" if lines else f"sentence {long[0] + 1}"
            log.warning("%d sentence%s longer than %d tokens tagged in overlapping pieces of that many; first: %s, %d tokens",
                        len(long), "s" if len(long) > 1 else "", MAX_TOKENS, first, len(sentences[long[0]]))
            if n_best or marginals:
                log.warning("no n-best lists or marginals for sentences longer than %d tokens (tagged in pieces)", MAX_TOKENS)
            return self._tag_pieces(sentences, batch_size, with_scores, docs, n_best, marginals, extras)
        out = [[] for _ in sentences]
        if extras is not None:
            extras[:] = [(None, None)] * len(sentences)
        runs = sorted(runs_of([len(s) for s in sentences], docs, self.context_tokens),
                      key=lambda run: sum(len(sentences[i]) for i in run))  # similar lengths batch together
        sizes = [sum(len(sentences[i]) for i in run) for run in runs]
        # Each group is a batch of whole runs: at most batch_size sentences and BATCH_TOKENS padded tokens
        # (or one run beyond either).
        groups, start = [], 0
        while start < len(runs):
            end, count = start + 1, len(runs[start])
            while (end < len(runs) and count + len(runs[end]) <= batch_size
                   and (end - start + 1) * sizes[end] <= BATCH_TOKENS):
                count += len(runs[end])
                end += 1
            groups.append(runs[start:end])
            start = end

        def tag_group(group: list[list[int]]) -> list[tuple[int, list[tuple[Span, float]]]]:
            """(sentence index, its spans with scores) for each sentence of the group."""
            rows = [i for run in group for i in run]
            b = make_batch(self.vocab, [sentences[i] for i in rows], [len(run) for run in group]).to(self.device)
            decoded = self.model.decode_all(b, with_scores, n_best, marginals)
            found = []
            for j, (i, path, p) in enumerate(zip(rows, decoded.paths, decoded.probs)):
                extra = (decoded.n_best[j] if n_best else None, decoded.marginals[j] if marginals else None)
                found.append((i, [(s, sum(p[s[0] : s[1]]) / (s[1] - s[0])) for s in spans([self.vocab.tags[k] for k in path], self.scheme)], extra))
            return found

        was_training = self.model.training
        self.model.eval()
        try:
            for found in parallel_map(tag_group, groups, cpu_workers(self.device, self.decode.workers)):
                for i, f, extra in found:
                    out[i] = f
                    if extras is not None:
                        extras[i] = extra
        finally:
            self.model.train(was_training)
        return out

    def _tag_pieces(self, sentences: list[list[str]], batch_size: int, with_scores: bool, docs: list, n_best: int = 0,
                    marginals: bool = False, extras: list | None = None) -> list[list[tuple[Span, float]]]:
        """_tag_tokens with each sentence longer than MAX_TOKENS cut into pieces of at most MAX_TOKENS tokens
        that overlap by 2 * MARGIN. A piece decides the entities starting in its own part (all of it but the
        margins, where it lacks context), unless an entity of the piece before still covers them."""
        pieces: list[tuple[int, int, int, int]] = []  # (sentence, start, own start, own end)
        step = MAX_TOKENS - 2 * MARGIN
        for i, s in enumerate(sentences):
            if len(s) <= MAX_TOKENS:
                pieces.append((i, 0, 0, len(s)))
                continue
            for own in range(0, len(s), step):
                start = min(max(0, own - MARGIN), len(s) - MAX_TOKENS)
                pieces.append((i, start, own, min(own + step, len(s))))
        # The pieces of a long sentence are read alone, not as one text with their document's other sentences.
        piece_docs = [(docs[i], i, own) if len(sentences[i]) > MAX_TOKENS else (docs[i], -1, 0) for i, _, own, _ in pieces]
        piece_extras = [] if extras is not None else None
        found = self._tag_tokens([sentences[i][start : start + MAX_TOKENS] for i, start, _, _ in pieces], batch_size,
                                 with_scores, piece_docs, n_best=n_best, marginals=marginals, extras=piece_extras)
        out: list[list[tuple[Span, float]]] = [[] for _ in sentences]
        if extras is not None:  # a sentence in one piece keeps its n-best list and marginals; a longer one has none
            extras[:] = [(None, None)] * len(sentences)
            for (i, _, _, _), extra in zip(pieces, piece_extras):
                if len(sentences[i]) <= MAX_TOKENS:
                    extras[i] = extra
        covered = [0] * len(sentences)  # where the last entity taken for each sentence ends
        for (i, start, own, own_end), spans_found in zip(pieces, found):
            for (b, e, kind), score in spans_found:
                if own <= b + start < own_end and b + start >= covered[i]:
                    out[i].append(((b + start, e + start, kind), score))
                    covered[i] = e + start
        return out

    def tag(self, texts: list[str], batch_size: int | None = None, first_line: int = 1, n_best: int = 0,
            marginals: bool = False) -> list[Tagged]:
        """Tag raw sentences (tokenised by `tokenize`), one record per sentence, in input order.
        Consecutive sentences are one document; an empty one ends it (see Tagger.tag_tokens).
        `first_line` numbers the first sentence in warnings (a chunk of a longer input). n_best=K fills each
        record's n_best with its K most probable readings (fewer when fewer tag sequences are valid), marginals
        its tokens' tag distributions; a sentence longer than MAX_TOKENS gets neither (None), with a warning."""
        texts = _no_string(texts, "Tagger.tag", "sentences")
        tokenized = [tokenize(t) for t in texts]
        docs = list(itertools.accumulate(not tokens for tokens, _ in tokenized))
        return self._records(texts, tokenized, batch_size, docs, list(range(first_line, first_line + len(texts))), n_best, marginals)

    def tag_conll(self, sentences: list[Sentence], batch_size: int | None = None, n_best: int = 0, marginals: bool = False) -> list[Tagged]:
        """Tag pre-tokenised sentences; a record's text is its tokens joined by single spaces. n_best, marginals: see tag."""
        sentences = _sentence_list(sentences, "Tagger.tag_conll")
        tokenized = []
        for s in sentences:
            offsets, pos = [], 0
            for w in s.tokens:
                offsets.append((pos, pos + len(w)))
                pos += len(w) + 1
            tokenized.append((s.tokens, offsets))
        return self._records([" ".join(s.tokens) for s in sentences], tokenized, batch_size, [s.doc for s in sentences],
                             [s.line for s in sentences], n_best, marginals)

    def _records(self, texts, tokenized, batch_size, docs, lines, n_best: int = 0, marginals: bool = False) -> list[Tagged]:
        if n_best < 0:
            raise S2SError(f"n-best must be at least 1, got {n_best}")
        extras = [] if n_best or marginals else None
        # An n-best reading's entities are scored as the best one's are, by their tags' marginals.
        found = self._tag_tokens([toks for toks, _ in tokenized], batch_size, docs=docs, lines=lines, n_best=n_best,
                                 marginals=bool(n_best or marginals), extras=extras)
        records = []
        for j, (text, (tokens, offsets), ents) in enumerate(zip(texts, tokenized, found)):

            def entity(s: int, e: int, kind: str, score: float) -> Entity:
                return Entity(text[offsets[s][0] : offsets[e - 1][1]], kind, s, e, offsets[s][0], offsets[e - 1][1], round(score, 4))

            record = Tagged(text, tokens, offsets, [entity(s, e, kind, score) for (s, e, kind), score in ents])
            if extras is not None:
                readings, dists = extras[j] if tokens else ([([], 1.0)], [])  # an empty sentence has one reading
                if n_best and readings is not None:
                    record.n_best = []
                    for path, prob in readings:
                        tags = [self.vocab.tags[k] for k in path]
                        found_spans = spans(tags, self.scheme)
                        record.n_best.append(Reading(round(prob, 6), to_tags(found_spans, len(tags), "iob2"), [
                            entity(s, e, kind, sum(dists[t][path[t]] for t in range(s, e)) / (e - s)) for s, e, kind in found_spans]))
                if marginals and dists is not None:
                    record.marginals = [{tag: round(p, 4) for tag, p in zip(self.vocab.tags, row)} for row in dists]
            records.append(record)
        return records

    def evaluate(self, gold: list[Sentence], scheme: str, batch_size: int | None = None, where: str = "<gold>",
                 check_types: bool = True) -> tuple[dict, list[list[Span]]]:
        """Entity P/R/F1 (exact span and type) of the predictions on gold sentences read from `where`, and the
        predicted spans. No sentences, or (check_types) a gold entity of a type the model does not know, fail
        with where:line: its F1 would be 0 however good the model."""
        gold = _sentence_list(gold, "Tagger.evaluate")
        if not gold:
            raise S2SError(f"{where}: no sentences to score")
        unknown = unknown_types(gold, scheme, self.vocab.tags) if check_types else None
        if unknown:
            (line, kind, tag), count = unknown
            raise S2SError(f"{where}:{line}: entity type {kind!r} (tag {tag}) is not one the model knows "
                           f"({', '.join(entity_types(self.vocab.tags))}); {count} such entit{'ies' if count > 1 else 'y'} "
                           "would count as missed")
        found = self._tag_tokens([s.tokens for s in gold], batch_size, with_scores=False, docs=[s.doc for s in gold],
                                 lines=[s.line for s in gold])
        pred = [[span for span, _ in f] for f in found]
        scores = span_scores([spans(s.tags, scheme) for s in gold], pred)
        scores["sentences"], scores["tokens"] = len(gold), sum(len(s.tokens) for s in gold)
        return scores, pred


def _sentence_list(sentences, method: str) -> list[Sentence]:
    sentences = _no_string(sentences, method, "CoNLL sentences")
    if not all(isinstance(s, Sentence) for s in sentences):
        raise TypeError(f"{method} takes a list of CoNLL sentences (s2s.data.conll.Sentence, e.g. from read_conll)")
    return sentences


EVALUATE_FLAGS = ("conll", "scheme", "workers")


def evaluate(args: argparse.Namespace) -> tuple[dict, list[str], dict[str, list[str]]]:
    """`s2s evaluate` on one tagging run or an ensemble of several: --conll FILE or --split, scored by exact span F1.
    Returns the scores, the report's lines and the file to write (path -> lines) under args.hyp_prefix."""
    tagger = Tagger.load(args.model, device=args.device, workers=args.workers)
    if bool(args.conll) == bool(args.split):
        raise S2SError(f"evaluate: {args.model[0]} is a tagging run: give --conll FILE or --split dev|test")
    config = checkpoint.load_trained(args.model[0], "tagging")[0]
    path = Path(args.conll) if args.conll else conll_path(config, getattr(config.data, args.split))
    scheme = args.scheme or tagger.file_scheme
    gold = read_conll(path, scheme, strict=config.data.strict_tags)
    scores, pred = tagger.evaluate(gold, scheme, args.batch_size, where=str(path))
    prefix = args.hyp_prefix
    scores["predictions"] = f"{prefix}.conll"
    m = scores["micro"]
    report = [f"{path}: {scores['sentences']} sentences, {scores['tokens']} tokens; "
              f"{m['gold']} gold entities, {m['predicted']} predicted, {m['correct']} correct"]
    for kind, v in scores["types"].items():
        report.append(f"{kind:<6} precision {v['precision']:6.2f}  recall {v['recall']:6.2f}  F1 {v['f1']:6.2f}  ({v['gold']} gold)")
    report.append(f"predictions (token gold predicted, IOB2): {prefix}.conll")
    report.append(f"F1 {m['f1']:.2f} (micro, exact span and type)  precision {m['precision']:.2f}  recall {m['recall']:.2f}")
    return scores, report, {f"{prefix}.conll": gold_and_predicted(gold, pred, scheme)}
