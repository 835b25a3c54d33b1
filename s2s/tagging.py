"""The tagging task: vocabularies and batches for training, the Tagger API, and span F1 evaluation.

Raw text is tokenised by one rule that keeps character offsets (`tokenize`):
abbreviations like "U.S." stay one token, numbers like "3,000.5" stay one token,
words keep inner hyphens and apostrophes ("Hewlett-Packard", "O'Neill"), and every
other non-space character is a token of its own.
"""
from __future__ import annotations

import array
import itertools
import json
import logging
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import torch

from s2s import checkpoint
from s2s.chars import case_id, clip_word
from s2s.config import Config, DecodeConfig
from s2s.conll import Sentence, Span, convert, read_conll, span_scores, spans, to_tags
from s2s.device import cpu_workers, parallel_map, resolve_device
from s2s.errors import S2SError
from s2s.models import SequenceTagger, TaggerEnsemble, build_model
from s2s.word_vectors import init_embedding, read_word_vectors

log = logging.getLogger(__name__)

PAD, UNK = "<pad>", "<unk>"
VOCAB_FILE = "tagging_vocab.json"
TOKEN_RE = re.compile(r"(?:[^\W\d_]\.){2,}|\d+(?:[.,:/]\d+)*|\w+(?:[-'’]\w+)*|\S", re.UNICODE)


def tokenize(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Tokens of raw text and their (start, end) character offsets in it."""
    matches = list(TOKEN_RE.finditer(text))
    return [m.group() for m in matches], [m.span() for m in matches]


def normalize(word: str, lowercase: bool) -> str:
    return re.sub(r"\d", "0", word.lower()) if lowercase else word


@dataclass
class Vocab:
    words: list[str]
    chars: list[str]
    tags: list[str]  # in the model's internal scheme
    lowercase: bool = True

    def __post_init__(self):
        self.word_ids = {w: i for i, w in enumerate(self.words)}
        self.char_ids = {c: i for i, c in enumerate(self.chars)}
        self.tag_ids = {t: i for i, t in enumerate(self.tags)}
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
    def build(cls, sentences: list[Sentence], scheme: str, target: str, lowercase: bool, min_freq: int, extra_words: list[str] = ()) -> "Vocab":
        """Training words seen at least `min_freq` times, then `extra_words` (those of pretrained vectors) not yet in."""
        counts = Counter(normalize(w, lowercase) for s in sentences for w in s.tokens)
        words = [PAD, UNK] + sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
        known = set(words)
        words += [w for w in extra_words if w not in known]
        chars = [PAD, UNK] + sorted({c for s in sentences for w in s.tokens for c in w})
        types = sorted({kind for s in sentences for _, _, kind in spans(s.tags, scheme)})
        prefixes = "BIES" if target == "bioes" else "BI"
        tags = ["O"] + [f"{p}-{k}" for k in types for p in prefixes]  # every tag of every type, seen or not
        return cls(words, chars, tags, lowercase)

    def save(self, path: Path) -> None:
        data = {"words": self.words, "chars": self.chars, "tags": self.tags, "lowercase": self.lowercase}
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "Vocab":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(data["words"], data["chars"], data["tags"], data["lowercase"])
        except FileNotFoundError:
            raise S2SError(f"{path}: no such file (the run directory lacks its tagging vocabularies)") from None
        except (ValueError, KeyError, TypeError) as e:
            raise S2SError(f"{path}: not a tagging vocabulary ({e})") from None

    def encode_words(self, tokens: list[str]) -> list[int]:
        unk = self.word_ids[UNK]
        return [self.word_ids.get(normalize(w, self.lowercase), unk) for w in tokens]

    def encode_chars(self, token: str) -> list[int]:
        unk = self.char_ids[UNK]
        return [self.char_ids.get(c, unk) for c in clip_word(token)]


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
    lm_words: torch.Tensor | None = None  # (R, T) training only, model.lm_vocab: each run token's shortlist class, -100 on padding

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
    vocab: Vocab,
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
    # characters, the biggest, go through one flat int64 array (torch.tensor parses nested lists ~9x slower).
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


def conll_path(config: Config, split: str) -> Path:
    return Path(config.data.dir) / f"{split}.txt"


class TaggingTask:
    """Training data, model and dev scoring for `s2s train` with task: tagging."""

    metric = "f1"

    def __init__(self, config: Config, run_dir: Path, resume: bool = False):
        data, m = config.data, config.model
        if data.format != "conll":
            raise S2SError(f"task tagging reads CoNLL files: set data.format: conll (got {data.format!r})")
        train = read_conll(conll_path(config, data.train), data.scheme)
        if data.max_train_pairs:
            train = train[: data.max_train_pairs]
        too_long = sum(len(s.tokens) > data.max_len for s in train)
        if too_long:
            log.warning("%s: skipped %d sentences longer than data.max_len=%d tokens", conll_path(config, data.train), too_long, data.max_len)
            train = [s for s in train if len(s.tokens) <= data.max_len]
        if not train:
            raise S2SError(f"{conll_path(config, data.train)}: no training sentences")
        self.dev = read_conll(conll_path(config, data.dev), data.scheme)
        if data.max_dev:
            self.dev = self.dev[: data.max_dev]
        self.scheme, self.decode, self.context_tokens = data.scheme, config.decode, m.context_tokens

        vocab_path = run_dir / VOCAB_FILE
        vectors = None
        if resume:
            self.vocab = Vocab.load(vocab_path)  # embeddings come from the checkpoint
        else:
            if config.vocab.word_vectors:
                vectors = read_word_vectors(config.vocab.word_vectors, config.vocab.lowercase)
            extra = vectors[0] if vectors else []
            self.vocab = Vocab.build(train, data.scheme, m.tag_scheme, config.vocab.lowercase, config.vocab.min_freq, extra)
        v = self.vocab
        log.info("%s: %d sentences; %d words, %d characters, %d tags", conll_path(config, data.train), len(train), len(v.words), len(v.chars), len(v.tags))

        self.tokens = [s.tokens for s in train]
        self.words = [v.encode_words(s.tokens) for s in train]
        self.tags = [[v.tag_ids[t] for t in convert(s.tags, data.scheme, m.tag_scheme)] for s in train]
        counts = Counter(w for ids in self.words for w in ids)
        self.singletons = {w for w, n in counts.items() if n == 1}
        # model.lm_vocab: the side objective's classes, the lm_vocab - 1 most frequent training words (1, 2, ...)
        # and 0 for every other word (none without the side objective: nothing to sort at start-up).
        frequent = sorted(counts, key=lambda w: (-counts[w], w))[: m.lm_vocab - 1] if m.lm_vocab > 0 else []
        self.lm_class = {w: i + 1 for i, w in enumerate(frequent)}
        self.unk_replace = config.train.unk_replace
        self.word_dropout = config.train.word_dropout
        # The training examples are runs of consecutive sentences (model.context_tokens; 0: single sentences).
        self.runs = runs_of([len(s) for s in self.tokens], [s.doc for s in train], m.context_tokens)
        self.lengths = [sum(len(self.tokens[i]) for i in run) for run in self.runs]
        self.model = build_model(config, len(v.words), len(v.tags), len(v.chars), v.tags)
        if vectors:
            found = init_embedding(self.model.encoder.embed.weight, v.words, *vectors, pad_id=v.word_ids[PAD])
            log.info("%s: %d vectors of dimension %d; %d of %d vocabulary words start from one",
                     config.vocab.word_vectors, len(vectors[0]), vectors[1].size(1), found, len(v.words))
        if not resume:
            v.save(vocab_path)  # once the model is built: a config error leaves no half-made run behind

    def batch(self, indices: list[int]) -> TagBatch:
        """The batch of the runs `indices` (see runs_of)."""
        unk = self.vocab.word_ids[UNK]
        sentences = [i for r in indices for i in self.runs[r]]
        words = [self.words[i] for i in sentences]
        if self.unk_replace:
            # Words seen once stand in for unseen ones, so the UNK embedding gets trained.
            words = [[unk if w in self.singletons and random.random() < self.unk_replace else w for w in s] for s in words]
        if self.word_dropout:
            words = [[unk if random.random() < self.word_dropout else w for w in s] for s in words]
        batch = make_batch(self.vocab, [self.tokens[i] for i in sentences], [len(self.runs[r]) for r in indices], words, [self.tags[i] for i in sentences])
        if not self.lm_class:
            return batch
        # The language-modelling targets are the words as written, not the UNK-replaced inputs.
        t = batch.words.size(1)
        rows = [[self.lm_class.get(w, 0) for i in self.runs[r] for w in self.words[i]] for r in indices]
        return batch._replace(lm_words=torch.tensor([row + [-100] * (t - len(row)) for row in rows]))

    def validate(self, model: SequenceTagger, device: torch.device) -> dict:
        tagger = Tagger(model, self.vocab, self.decode, device, context_tokens=self.context_tokens)
        scores, _ = tagger.evaluate(self.dev, self.scheme)
        return {"f1": scores["micro"]["f1"], "precision": scores["micro"]["precision"], "recall": scores["micro"]["recall"]}


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
class Tagged:
    """One tagged sentence (an empty input line gives an empty one)."""

    text: str
    tokens: list[str] = field(default_factory=list)
    offsets: list[tuple[int, int]] = field(default_factory=list)
    entities: list[Entity] = field(default_factory=list)

    def tags(self, scheme: str = "iob2") -> list[str]:
        return to_tags([(e.start, e.end, e.type) for e in self.entities], len(self.tokens), scheme)

    def to_json(self) -> str:
        return json.dumps({"text": self.text, "tokens": self.tokens, "entities": [asdict(e) for e in self.entities]}, ensure_ascii=False)

    def to_inline(self) -> str:
        """`[PER Alan Shearer] was named ...`: the text with each entity bracketed with its type."""
        out, pos = [], 0
        for e in self.entities:
            out += [self.text[pos : e.char_start], f"[{e.type} {self.text[e.char_start : e.char_end]}]"]
            pos = e.char_end
        return "".join(out + [self.text[pos:]])

    def to_conll(self, scheme: str = "iob2") -> list[str]:
        """Token and tag columns, then a blank line (only the blank line for an empty sentence)."""
        return [f"{t} {g}" for t, g in zip(self.tokens, self.tags(scheme))] + [""]


class Tagger:
    """Tag named entities with a trained model: `Tagger.load(run_dir).tag(["Alan Shearer was named ..."])`."""

    def __init__(
        self, model: SequenceTagger | TaggerEnsemble, vocab: Vocab, decode: DecodeConfig, device: torch.device, file_scheme: str = "iob1", context_tokens: int = 0
    ):
        self.model, self.vocab, self.decode, self.device = model, vocab, decode, device
        self.file_scheme = file_scheme  # tag scheme of the CoNLL files the model was trained on
        self.context_tokens = context_tokens  # model.context_tokens it was trained with
        self.scheme = "bioes" if any(t.startswith(("E-", "S-")) for t in vocab.tags) else "iob2"

    @classmethod
    def load(cls, run_dirs: str | Path | list[str | Path], device: str = "auto", workers: int | None = None) -> "Tagger":
        """A trained tagger; several run directories (same data, vectors and model.context_tokens,
        e.g. different train.seed) make an ensemble that averages their scores. workers, when given,
        replaces decode.workers (batches tagged at once; 0 = one per CPU thread)."""
        run_dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
        if not run_dirs:
            raise S2SError("no tagging model given")
        members = []
        for run_dir in run_dirs:
            config, payload, path = checkpoint.load_trained(run_dir, "tagging")
            vocab = Vocab.load(Path(run_dir) / VOCAB_FILE)
            model = build_model(config, len(vocab.words), len(vocab.tags), len(vocab.chars), vocab.tags)
            members.append(checkpoint.load_weights(model, payload, path))
            setup = (vocab.words, vocab.chars, vocab.tags, vocab.lowercase, config.model.context_tokens, config.model.crf, config.data.scheme)
            if len(members) == 1:
                first_vocab, first_config, first_setup = vocab, config, setup
            elif setup != first_setup:
                raise S2SError(f"{run_dir}: cannot join an ensemble with {run_dirs[0]}: the vocabularies, tags, "
                               "model.context_tokens, model.crf or data.scheme differ (train members on the same data and vectors)")
        vocab, config = first_vocab, first_config
        model = members[0] if len(members) == 1 else TaggerEnsemble(members)
        target = resolve_device(device)
        decode = config.decode if workers is None else replace(config.decode, workers=workers)
        return cls(model.to(target).eval(), vocab, decode, target, config.data.scheme, config.model.context_tokens)

    def tag_tokens(
        self, sentences: list[list[str]], batch_size: int | None = None, with_scores: bool = True, docs: list[int] | None = None
    ) -> list[list[tuple[Span, float]]]:
        """Entity spans with scores per tokenised sentence, in input order; [] for an empty one.
        `docs` numbers each sentence's document (default: all one); a model trained with
        model.context_tokens reads consecutive sentences of a document together."""
        batch_size = batch_size or self.decode.batch_size
        out: list[list[tuple[Span, float]]] = [[] for _ in sentences]
        runs = runs_of([len(s) for s in sentences], docs or [0] * len(sentences), self.context_tokens)
        runs.sort(key=lambda run: sum(len(sentences[i]) for i in run))  # similar lengths batch together
        groups, start = [], 0  # each a batch of whole runs, at most batch_size sentences (or one longer run)
        while start < len(runs):
            end, count = start + 1, len(runs[start])
            while end < len(runs) and count + len(runs[end]) <= batch_size:
                count += len(runs[end])
                end += 1
            groups.append(runs[start:end])
            start = end

        def tag_group(group: list[list[int]]) -> list[tuple[int, list[tuple[Span, float]]]]:
            """(sentence index, its spans with scores) for each sentence of the group."""
            rows = [i for run in group for i in run]
            b = make_batch(self.vocab, [sentences[i] for i in rows], [len(run) for run in group]).to(self.device)
            paths, probs = self.model.decode(b, with_scores)
            found = []
            for i, path, p in zip(rows, paths, probs):
                found.append((i, [(s, sum(p[s[0] : s[1]]) / (s[1] - s[0])) for s in spans([self.vocab.tags[k] for k in path], self.scheme)]))
            return found

        was_training = self.model.training
        self.model.eval()
        try:
            for found in parallel_map(tag_group, groups, cpu_workers(self.device, self.decode.workers)):
                for i, f in found:
                    out[i] = f
        finally:
            self.model.train(was_training)
        return out

    def tag(self, texts: list[str], batch_size: int | None = None) -> list[Tagged]:
        """Tag raw sentences (tokenised by `tokenize`), one record per sentence, in input order.
        Consecutive sentences are one document; an empty one ends it (see Tagger.tag_tokens)."""
        tokenized = [tokenize(t) for t in texts]
        docs = list(itertools.accumulate(not tokens for tokens, _ in tokenized))
        return self._records(texts, tokenized, batch_size, docs)

    def tag_conll(self, sentences: list[Sentence], batch_size: int | None = None) -> list[Tagged]:
        """Tag pre-tokenised sentences; a record's text is its tokens joined by single spaces."""
        tokenized = []
        for s in sentences:
            offsets, pos = [], 0
            for w in s.tokens:
                offsets.append((pos, pos + len(w)))
                pos += len(w) + 1
            tokenized.append((s.tokens, offsets))
        return self._records([" ".join(s.tokens) for s in sentences], tokenized, batch_size, [s.doc for s in sentences])

    def _records(self, texts, tokenized, batch_size, docs) -> list[Tagged]:
        found = self.tag_tokens([toks for toks, _ in tokenized], batch_size, docs=docs)
        records = []
        for text, (tokens, offsets), ents in zip(texts, tokenized, found):
            entities = [
                Entity(text[offsets[s][0] : offsets[e - 1][1]], kind, s, e, offsets[s][0], offsets[e - 1][1], round(score, 4))
                for (s, e, kind), score in ents
            ]
            records.append(Tagged(text, tokens, offsets, entities))
        return records

    def evaluate(self, gold: list[Sentence], scheme: str, batch_size: int | None = None) -> tuple[dict, list[list[Span]]]:
        """Entity P/R/F1 (exact span and type) of the predictions on gold sentences, and the predicted spans."""
        found = self.tag_tokens([s.tokens for s in gold], batch_size, with_scores=False, docs=[s.doc for s in gold])
        pred = [[span for span, _ in f] for f in found]
        scores = span_scores([spans(s.tags, scheme) for s in gold], pred)
        scores["sentences"], scores["tokens"] = len(gold), sum(len(s.tokens) for s in gold)
        return scores, pred
