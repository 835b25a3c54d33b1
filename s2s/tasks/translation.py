"""Translation (N-vs-M): the shared encoder, an attention decoder, SentencePiece on both sides,
trained on parallel text and scored with detokenized sacreBLEU."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from s2s import checkpoint, distributed
from s2s.config import Config
from s2s.data.batching import pad
from s2s.data.parallel import describe, fingerprint, iter_pairs, load_split, read_parallel
from s2s.data.sentencepiece import BOS, EOS, Sample, load_sentencepiece, model_paths, train_sentencepiece
from s2s.data.store import StoreWriter, TokenStore, file_digest
from s2s.device import autocast, cpu_workers, parallel_map, resolve_device
from s2s.errors import S2SError
from s2s.metrics import bleu_chrf
from s2s.nn import Output
from s2s.nn.decoder import AttentionDecoder, DecoderState, Memory
from s2s.nn.encoder import Encoder
from s2s.search import beam_hypotheses, beam_search, greedy_search, in_flight_groups, max_lengths
from s2s.search import n_best as n_best_of

log = logging.getLogger(__name__)


class Seq2Seq(nn.Module):
    """Encoder -> AttentionDecoder, trained with teacher forcing. Search decodes through
    encode / init_state / step (see s2s.search)."""

    def __init__(self, encoder: Encoder, decoder: AttentionDecoder, label_smoothing: float = 0.0, pad_id: int = 0):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.label_smoothing = label_smoothing
        self.pad_id = pad_id

    @property
    def vocab_size(self) -> int:
        return self.decoder.output.out_features

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> Memory:
        return self.decoder.memory(self.encoder(src, src_lengths))

    def init_state(self, memory: Memory) -> DecoderState:
        return self.decoder.init_state(memory)

    def step(self, prev: torch.Tensor, state: DecoderState, memory: Memory) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        return self.decoder.step(prev, state, memory)

    def forward(self, batch: "Batch") -> Output:
        enc = self.encoder(batch.src, batch.src_lengths)
        logits = self.decoder(batch.tgt_in, enc)  # (B, T, V)
        num_tokens = int(batch.num_tokens)
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(),
            batch.tgt_out.flatten(),
            ignore_index=self.pad_id,
            label_smoothing=self.label_smoothing,
            reduction="sum",
        )
        return Output(loss / max(num_tokens, 1), logits, num_tokens)


def build_model(config: Config, src_vocab_size: int, tgt_vocab_size: int) -> Seq2Seq:
    e, h = config.encoder, config.translation
    encoder = Encoder(src_vocab_size, e.emb_dim, e.hidden_size, e.num_layers, e.cell, e.dropout, e.bidirectional,
                      conv_filters=e.conv_filters, conv_kernel=e.conv_kernel, conv_pool=e.conv_pool)
    decoder = AttentionDecoder(tgt_vocab_size, e.emb_dim, h.dec_hidden_size, encoder.output_size, h.attn_size, h.dec_layers,
                               e.dropout, h.tie_embeddings)
    return Seq2Seq(encoder, decoder, config.train.label_smoothing)


class Batch(NamedTuple):
    src: torch.Tensor  # (B, S) source ids, PAD-padded
    src_lengths: torch.Tensor  # (B,)
    tgt_in: torch.Tensor  # (B, T) BOS + target
    tgt_out: torch.Tensor  # (B, T) target + EOS
    num_tokens: int  # real target tokens (including EOS)

    def to(self, device: torch.device) -> "Batch":
        return Batch(*(x.to(device, non_blocking=True) for x in self[:4]), self.num_tokens)


def make_batch(src: list[list[int]], tgt: list[list[int]]) -> Batch:
    src_t, src_lengths = pad(src)
    tgt_in, _ = pad([[BOS] + t for t in tgt])
    tgt_out, tgt_lengths = pad([t + [EOS] for t in tgt])
    return Batch(src_t, src_lengths, tgt_in, tgt_out, int(tgt_lengths.sum()))


STORE = "store"  # the run directory's token store folder
PROGRESS_EVERY = 1_000_000  # pairs between log lines while a store is built


def training_pairs(data):
    """The training split in chunks of (sources, targets), cut at data.max_train pairs when set."""
    left = data.max_train or None
    for src, tgt in iter_pairs(data, data.train):
        if left is not None:
            src, tgt = src[:left], tgt[:left]
            left -= len(src)
        if src:
            yield src, tgt
        if left == 0:
            return


def train_tokenizers(config: Config, src_path: Path, tgt_path: Path):
    """SentencePiece models trained on a random sample of vocab.max_sentences training sentences per model
    (half from each side for a joint model), read in one pass over the data."""
    v = config.vocab
    size = v.max_sentences // 2 if v.joint else v.max_sentences
    samples = Sample(size, config.train.seed), Sample(size, config.train.seed + 1)
    for src, tgt in training_pairs(config.data):
        samples[0].add(src)
        samples[1].add(tgt)
    if v.joint:
        sp = train_sentencepiece(samples[0].lines + samples[1].lines, src_path, v.src_size, v.model_type, v.character_coverage)
        return sp, sp
    return (train_sentencepiece(samples[0].lines, src_path, v.src_size, v.model_type, v.character_coverage),
            train_sentencepiece(samples[1].lines, tgt_path, v.tgt_size, v.model_type, v.character_coverage))


class Task:
    """Training data, model and dev scoring for `s2s train` with task: translation.

    The training pairs live in a token store in the run directory (s2s.data.store), encoded once: a restart,
    a resumed run and every torchrun rank reuse it, and batches read their pairs from disk."""

    metric = "bleu"
    higher_is_better = True

    def __init__(self, config: Config, run_dir: Path, resume: bool = False):
        data, v = config.data, config.vocab
        self.dev_src, self.dev_ref = load_split(data, data.dev)
        if not self.dev_src:
            raise S2SError(f"{describe(data, data.dev)}: no dev sentences to validate on")
        self.config = config

        src_path, tgt_path = model_paths(run_dir, v.joint)
        if resume:
            self.sp_src, self.sp_tgt = load_sentencepiece(src_path), load_sentencepiece(tgt_path)
        else:
            self.sp_src, self.sp_tgt = train_tokenizers(config, src_path, tgt_path)
        key = {"data": fingerprint(data, data.train), "tokenizers": sorted({file_digest(src_path), file_digest(tgt_path)}),
               "max_train": data.max_train, "max_len": data.max_len}
        folder = run_dir / STORE
        self.store = distributed.open_or_build_store(folder, key, lambda: self.build_store(folder, key))
        log.info("%s: %d training pairs (token store %s)", describe(data, data.train), len(self.store), folder)
        # Batching cost of an example: its longer side (target + EOS).
        self.lengths = self.store.lengths
        self.model = build_model(config, self.sp_src.get_piece_size(), self.sp_tgt.get_piece_size())

    def build_store(self, folder: Path, key: dict) -> TokenStore:
        """Encode the training pairs into a token store, skipping pairs with an empty side or a side longer than data.max_len."""
        data = self.config.data
        where = describe(data, data.train)
        writer = StoreWriter(folder, {"src": self.sp_src.get_piece_size(), "tgt": self.sp_tgt.get_piece_size()})
        empty = too_long = read = 0
        start = time.monotonic()
        try:
            for src, tgt in training_pairs(data):
                kept_src, kept_tgt, lengths = [], [], []
                for s, t in zip(self.sp_src.encode(src), self.sp_tgt.encode(tgt)):
                    if not s or not t:
                        empty += 1
                    elif len(s) > data.max_len or len(t) > data.max_len:
                        too_long += 1
                    else:
                        kept_src.append(s)
                        kept_tgt.append(t)
                        lengths.append(max(len(s), len(t) + 1))
                writer.add({"src": kept_src, "tgt": kept_tgt}, lengths)
                read += len(src)
                if read // PROGRESS_EVERY != (read - len(src)) // PROGRESS_EVERY:
                    log.info("%s: %d pairs encoded, %.0f pairs/s", where, read, read / (time.monotonic() - start))
            if not writer.count:
                raise S2SError(f"{where}: no usable training pairs (empty data, or every pair empty or too long)")
            store = writer.finish(key)
        except BaseException:
            writer.abort()
            raise
        if empty or too_long:
            log.warning("%s: skipped %d pairs with an empty side and %d longer than data.max_len=%d subword tokens",
                        where, empty, too_long, data.max_len)
        log.info("%s: token store of %d pairs built in %.0fs", where, len(store), time.monotonic() - start)
        return store

    def batch(self, indices: list[int]) -> Batch:
        return make_batch(self.store.get("src", indices), self.store.get("tgt", indices))

    def validate(self, model: Seq2Seq, device: torch.device) -> dict:
        translator = Translator(model, self.sp_src, self.sp_tgt, self.config, device)
        hyps = translator.translate(self.dev_src, beam_size=self.config.translation.valid_beam_size)
        scores = bleu_chrf(hyps, self.dev_ref)
        return {"bleu": scores["bleu"], "chrf": scores["chrf"]}


def sentence_list(sentences, method: str) -> list[str]:
    """`sentences` as a list; a bare string is refused, not read as a list of one-character sentences."""
    if isinstance(sentences, (str, bytes)):
        raise TypeError(f"{method} takes a list of sentences, got a string: pass [sentence] for one")
    return list(sentences)


@dataclasses.dataclass
class Candidate:
    """One of a sentence's n best translations."""

    text: str  # detokenized
    pieces: list[str]  # the target pieces, EOS left out
    logprob: float  # total log-probability of the pieces and EOS
    score: float  # logprob / ((5 + len(pieces) + 1) / 6) ** translation.length_penalty: what the beam ranks by
    attention: list[list[float]] | None = None  # (len(pieces), source pieces): each row sums to 1; EOS's row left out
    alignment: list[tuple[int, int]] | None = None  # (source piece, target piece) pairs: each target piece's argmax

    def to_dict(self) -> dict:
        out = {"text": self.text, "pieces": self.pieces, "logprob": round(self.logprob, 6), "score": round(self.score, 6)}
        if self.attention is not None:
            out["attention"] = [[round(w, 6) for w in row] for row in self.attention]
            out["alignment"] = " ".join(f"{i}-{j}" for i, j in self.alignment)  # Pharaoh format, as fast_align writes
        return out


@dataclasses.dataclass
class NBest:
    """A sentence's n best translations, best first (hypotheses[0] is what `translate` gives); an empty
    sentence has none."""

    source_pieces: list[str]  # the source as the model read it (truncated at translation.max_src_len)
    hypotheses: list[Candidate]

    def to_json(self) -> str:
        return json.dumps({"source_pieces": self.source_pieces, "hypotheses": [h.to_dict() for h in self.hypotheses]},
                          ensure_ascii=False)


@dataclasses.dataclass
class PairScore:
    """The log-probability the model gives a target sentence after its source (teacher forcing)."""

    pieces: list[str]  # the target pieces, EOS left out
    token_logprobs: list[float]  # one per piece and one for EOS

    @property
    def logprob(self) -> float:
        return sum(self.token_logprobs)

    @property
    def per_token(self) -> float:
        return self.logprob / len(self.token_logprobs)

    def to_json(self) -> str:
        return json.dumps({"logprob": round(self.logprob, 6), "per_token": round(self.per_token, 6), "tokens": len(self.token_logprobs),
                           "pieces": self.pieces, "token_logprobs": [round(x, 6) for x in self.token_logprobs]}, ensure_ascii=False)

    def to_tsv(self) -> str:
        return f"{self.logprob:.6f}\t{self.per_token:.6f}\t{len(self.token_logprobs)}"


class Translator:
    """Translate raw sentences with a trained model: `Translator.load(run_dir).translate([...])`."""

    def __init__(self, model: Seq2Seq, sp_src, sp_tgt, config: Config, device: torch.device):
        self.model, self.sp_src, self.sp_tgt, self.config, self.device = model, sp_src, sp_tgt, config, device
        self.decode, self.search = config.decode, config.translation

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto", amp: bool = False, workers: int | None = None) -> "Translator":
        """amp=True decodes in bf16 mixed precision whatever the run's decode.amp says; workers, when
        given, replaces decode.workers (batches decoded at once; 0 = one per CPU thread)."""
        config, payload, path = checkpoint.load_trained(run_dir, "translation")
        src_path, tgt_path = model_paths(path.parent, config.vocab.joint)
        sp_src, sp_tgt = load_sentencepiece(src_path), load_sentencepiece(tgt_path)
        model = build_model(config, sp_src.get_piece_size(), sp_tgt.get_piece_size())
        checkpoint.load_weights(model, payload, path)
        target = resolve_device(device)
        decode = dataclasses.replace(config.decode, amp=amp or config.decode.amp)
        if workers is not None:
            decode = dataclasses.replace(decode, workers=workers)
        return cls(model.to(target).eval(), sp_src, sp_tgt, dataclasses.replace(config, decode=decode), target)

    def translate_ids(self, sentences: list[str], beam_size: int | None = None, batch_size: int | None = None,
                      first_line: int = 1) -> list[list[int]]:
        """Target token ids per sentence, in input order; an empty sentence gives []. `first_line` numbers the
        first sentence in warnings (a chunk of a longer input)."""
        sentences = sentence_list(sentences, "Translator.translate_ids")
        beam_size = beam_size or self.search.beam_size
        batch_size = batch_size or self.decode.batch_size
        src = self.source_ids(sentences, first_line)
        todo = sorted((i for i, ids in enumerate(src) if ids), key=lambda i: len(src[i]))  # similar lengths batch well
        workers = cpu_workers(self.device, self.decode.workers)
        if beam_size == 1:
            batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
        else:  # beam search keeps batch_size sentences in flight over a group of batches
            batches = in_flight_groups(todo, batch_size, workers)

        def decode(rows: list[int]) -> list[list[int]]:
            tokens, lengths = pad([src[i] for i in rows])
            limits = max_lengths(lengths, self.search.max_len_a, self.search.max_len_b)
            tokens, lengths = tokens.to(self.device), lengths.to(self.device)
            with autocast(self.device, self.decode.amp):
                if beam_size == 1:
                    return greedy_search(self.model, tokens, lengths, limits, BOS, EOS)
                return beam_search(self.model, tokens, lengths, limits, BOS, EOS, beam_size, self.search.length_penalty,
                                   in_flight=batch_size)

        out: list[list[int]] = [[] for _ in sentences]
        was_training = self.model.training
        self.model.eval()
        try:
            for rows, hyps in zip(batches, parallel_map(decode, batches, workers)):
                for i, hyp in zip(rows, hyps):
                    out[i] = hyp
        finally:
            self.model.train(was_training)
        return out

    def source_ids(self, sentences: list[str], first_line: int = 1) -> list[list[int]]:
        """The source pieces' ids the model reads, cut at translation.max_src_len with a warning."""
        limit = self.search.max_src_len
        src = self.sp_src.encode([s.strip() for s in sentences])
        for i, ids in enumerate(src):
            if len(ids) > limit:
                log.warning("input line %d: %d subword tokens, translating only the first %d (translation.max_src_len)",
                            i + first_line, len(ids), limit)
                src[i] = ids[:limit]
        return src

    def translate_nbest(self, sentences: list[str], n_best: int = 1, beam_size: int | None = None, attention: bool = False,
                        batch_size: int | None = None, first_line: int = 1) -> list[NBest]:
        """The n_best (at most beam_size) best translations of each sentence, best first, with their log-probabilities
        and the beam's length-normalised scores; hypotheses[0] is `translate`'s output (at beam size 1 too: beam
        search of width 1 is greedy search). A sentence whose best hypothesis ended early may have fewer than
        n_best. attention=True adds each hypothesis' attention weights and a hard alignment."""
        sentences = sentence_list(sentences, "Translator.translate_nbest")
        beam_size = beam_size or self.search.beam_size
        if not 1 <= n_best <= beam_size:
            raise S2SError(f"n-best {n_best}: the beam keeps {beam_size} hypotheses; use a beam size >= {n_best}")
        batch_size = batch_size or self.decode.batch_size
        src = self.source_ids(sentences, first_line)
        todo = sorted((i for i, ids in enumerate(src) if ids), key=lambda i: len(src[i]))
        workers = cpu_workers(self.device, self.decode.workers)
        batches = in_flight_groups(todo, batch_size, workers)

        def decode(rows: list[int]):
            tokens, lengths = pad([src[i] for i in rows])
            limits = max_lengths(lengths, self.search.max_len_a, self.search.max_len_b)
            tokens, lengths = tokens.to(self.device), lengths.to(self.device)
            with autocast(self.device, self.decode.amp):
                finished = beam_hypotheses(self.model, tokens, lengths, limits, BOS, EOS, beam_size,
                                           self.search.length_penalty, in_flight=batch_size, attention=attention)
            return n_best_of(finished, n_best)

        out = [NBest([], []) for _ in sentences]
        was_training = self.model.training
        self.model.eval()
        try:
            for rows, hyps in zip(batches, parallel_map(decode, batches, workers)):
                for i, best in zip(rows, hyps):
                    out[i] = NBest(self.sp_src.id_to_piece(src[i]), [self._candidate(h) for h in best])
        finally:
            self.model.train(was_training)
        return out

    def _candidate(self, hyp) -> Candidate:
        candidate = Candidate(self.sp_tgt.decode(hyp.tokens), self.sp_tgt.id_to_piece(hyp.tokens), hyp.logprob, hyp.score)
        if hyp.attention is not None:
            candidate.attention = hyp.attention.tolist()
            candidate.alignment = [(int(i), j) for j, i in enumerate(hyp.attention.argmax(1).tolist())] if hyp.tokens else []
        return candidate

    def score(self, sources: list[str], targets: list[str], batch_size: int | None = None,
              pieces: bool = False) -> list[PairScore | None]:
        """The log-probability of each target after its source, total and per piece (teacher forcing, EOS counted);
        None where the source is empty. Sources are cut at translation.max_src_len as `translate` cuts them.
        pieces=True reads each target as subword pieces separated by spaces (what `pieces` and --raw-output write),
        so that a model's own output is scored as it produced it: detokenized text need not encode back to it."""
        sources, targets = sentence_list(sources, "Translator.score"), sentence_list(targets, "Translator.score")
        if len(sources) != len(targets):
            raise S2SError(f"score: {len(sources)} sources but {len(targets)} targets")
        batch_size = batch_size or self.decode.batch_size
        src = self.source_ids(sources)
        if pieces:
            tgt = [[self.sp_tgt.piece_to_id(p) for p in t.split()] for t in targets]
        else:
            tgt = self.sp_tgt.encode([t.strip() for t in targets])
        todo = sorted((i for i, ids in enumerate(src) if ids), key=lambda i: (len(src[i]), len(tgt[i])))
        out: list[PairScore | None] = [None] * len(sources)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(todo), batch_size):
                rows = todo[start : start + batch_size]
                batch = make_batch([src[i] for i in rows], [tgt[i] for i in rows]).to(self.device)
                with torch.no_grad(), autocast(self.device, self.decode.amp):
                    logits = self.model.decoder(batch.tgt_in, self.model.encoder(batch.src, batch.src_lengths))  # (B, T, V)
                    logp = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
                    picked = logp.gather(2, batch.tgt_out.unsqueeze(2)).squeeze(2).cpu()  # (B, T)
                for b, i in enumerate(rows):
                    out[i] = PairScore(self.sp_tgt.id_to_piece(tgt[i]), picked[b, : len(tgt[i]) + 1].tolist())
        finally:
            self.model.train(was_training)
        return out

    def translate(self, sentences: list[str], beam_size: int | None = None, batch_size: int | None = None) -> list[str]:
        """Detokenized translations, one per sentence, in input order."""
        sentences = sentence_list(sentences, "Translator.translate")
        return [self.sp_tgt.decode(ids) for ids in self.translate_ids(sentences, beam_size, batch_size)]

    def pieces(self, ids: list[int]) -> str:
        """The raw model output: subword pieces joined by spaces."""
        return " ".join(self.sp_tgt.id_to_piece(ids))

    def evaluate(self, sources: list[str], refs: list[str], beam_size: int | None = None) -> tuple[dict, list[list[int]]]:
        """sacreBLEU BLEU and chrF of the translations of `sources` against `refs`, and the raw ids."""
        sources, refs = sentence_list(sources, "Translator.evaluate"), sentence_list(refs, "Translator.evaluate")
        if len(sources) != len(refs):
            raise S2SError(f"evaluate: {len(sources)} sources but {len(refs)} references")
        if not sources:
            raise S2SError("evaluate: no sentences to score")
        ids = self.translate_ids(sources, beam_size)
        return bleu_chrf([self.sp_tgt.decode(x) for x in ids], refs), ids


EVALUATE_FLAGS = ("src", "ref", "beam_size", "amp", "workers")


def evaluate(args: argparse.Namespace) -> tuple[dict, list[str], dict[str, list[str]]]:
    """`s2s evaluate` on a translation run: --src/--ref or --split, scored with sacreBLEU. Returns the
    scores, the report's lines and the files to write (path -> lines) under args.hyp_prefix."""
    if len(args.model) > 1:
        raise S2SError("evaluate: several --model runs (an ensemble) work only for tagging runs")
    run = args.model[0]
    if bool(args.split) == bool(args.src or args.ref) or bool(args.src) != bool(args.ref):
        raise S2SError(f"evaluate: {run} is a translation run: give --src FILE --ref FILE, or --split dev|test")
    translator = Translator.load(run, device=args.device, amp=args.amp, workers=args.workers)
    if args.split:
        data = translator.config.data
        sources, refs = load_split(data, getattr(data, args.split))
        where = describe(data, getattr(data, args.split))
    else:
        sources, refs = read_parallel(args.src, args.ref)
        where = f"{args.src} and {args.ref}"
    if not sources:
        raise S2SError(f"evaluate: {where}: no sentences to score")
    scores, ids = translator.evaluate(sources, refs, args.beam_size)
    prefix = args.hyp_prefix
    outputs = {f"{prefix}.hyp": [translator.sp_tgt.decode(x) for x in ids],  # detokenized, what is scored
               f"{prefix}.raw": [translator.pieces(x) for x in ids]}  # raw subword output of the model
    scores["hypotheses"] = f"{prefix}.hyp"
    report = [scores["bleu_line"], scores["chrf_line"], f"hypotheses: {prefix}.hyp (raw subwords: {prefix}.raw)"]
    return scores, report, outputs
