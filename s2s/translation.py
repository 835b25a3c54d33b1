"""The translation task: data preparation for training, and the Translator API."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from s2s import checkpoint
from s2s.config import Config, DecodeConfig
from s2s.data import Batch, describe, load_split, make_batch, pad
from s2s.device import autocast, cpu_workers, parallel_map, resolve_device
from s2s.errors import S2SError
from s2s.metrics import bleu_chrf
from s2s.models import Seq2Seq, build_model
from s2s.search import beam_search, greedy_search, in_flight_groups, max_lengths
from s2s.tokenizer import BOS, EOS, load_sentencepiece, model_paths, train_sentencepiece

log = logging.getLogger(__name__)


class TranslationTask:
    """Training data, model and dev scoring for `s2s train` with task: translation."""

    metric = "bleu"

    def __init__(self, config: Config, run_dir: Path, resume: bool = False):
        data = config.data
        src, tgt = load_split(data, data.train)
        if data.max_train_pairs:
            src, tgt = src[: data.max_train_pairs], tgt[: data.max_train_pairs]
        self.dev_src, self.dev_ref = load_split(data, data.dev)
        self.decode = config.decode

        src_path, tgt_path = model_paths(run_dir, config.vocab.joint)
        v = config.vocab
        if resume:
            self.sp_src, self.sp_tgt = load_sentencepiece(src_path), load_sentencepiece(tgt_path)
        elif v.joint:
            self.sp_src = self.sp_tgt = train_sentencepiece(
                src + tgt, src_path, v.src_size, v.model_type, v.character_coverage
            )
        else:
            self.sp_src = train_sentencepiece(src, src_path, v.src_size, v.model_type, v.character_coverage)
            self.sp_tgt = train_sentencepiece(tgt, tgt_path, v.tgt_size, v.model_type, v.character_coverage)

        self.src_ids: list[list[int]] = []
        self.tgt_ids: list[list[int]] = []
        empty = too_long = 0
        for s, t in zip(self.sp_src.encode(src), self.sp_tgt.encode(tgt)):
            if not s or not t:
                empty += 1
            elif len(s) > data.max_len or len(t) > data.max_len:
                too_long += 1
            else:
                self.src_ids.append(s)
                self.tgt_ids.append(t)
        where = describe(data, data.train)
        if empty or too_long:
            log.warning(
                "%s: skipped %d pairs with an empty side and %d longer than data.max_len=%d subword tokens",
                where, empty, too_long, data.max_len,
            )
        if not self.src_ids:
            raise S2SError(f"{where}: no usable training pairs (empty data, or every pair empty or too long)")
        log.info("%s: %d training pairs", where, len(self.src_ids))
        # Batching cost of an example: its longer side (target + EOS).
        self.lengths = [max(len(s), len(t) + 1) for s, t in zip(self.src_ids, self.tgt_ids)]
        self.model = build_model(config, self.sp_src.get_piece_size(), self.sp_tgt.get_piece_size())

    def batch(self, indices: list[int]) -> Batch:
        return make_batch([self.src_ids[i] for i in indices], [self.tgt_ids[i] for i in indices])

    def validate(self, model: Seq2Seq, device: torch.device) -> dict:
        translator = Translator(model, self.sp_src, self.sp_tgt, self.decode, device)
        hyps = translator.translate(self.dev_src, beam_size=self.decode.valid_beam_size)
        scores = bleu_chrf(hyps, self.dev_ref)
        return {"bleu": scores["bleu"], "chrf": scores["chrf"]}


class Translator:
    """Translate raw sentences with a trained model: `Translator.load(run_dir).translate([...])`."""

    def __init__(self, model: Seq2Seq, sp_src, sp_tgt, decode: DecodeConfig, device: torch.device):
        self.model, self.sp_src, self.sp_tgt, self.decode, self.device = model, sp_src, sp_tgt, decode, device

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto", amp: bool = False, workers: int | None = None) -> "Translator":
        """amp=True decodes in bf16 mixed precision whatever the run's decode.amp says; workers, when
        given, replaces decode.workers (batches decoded at once; 0 = one per CPU thread)."""
        config, payload, path = checkpoint.load_trained(run_dir, "translation")
        src_path, tgt_path = model_paths(Path(run_dir), config.vocab.joint)
        sp_src, sp_tgt = load_sentencepiece(src_path), load_sentencepiece(tgt_path)
        model = build_model(config, sp_src.get_piece_size(), sp_tgt.get_piece_size())
        checkpoint.load_weights(model, payload, path)
        target = resolve_device(device)
        decode = dataclasses.replace(config.decode, amp=amp or config.decode.amp)
        if workers is not None:
            decode = dataclasses.replace(decode, workers=workers)
        return cls(model.to(target).eval(), sp_src, sp_tgt, decode, target)

    def translate_ids(
        self, sentences: list[str], beam_size: int | None = None, batch_size: int | None = None
    ) -> list[list[int]]:
        """Target token ids per sentence, in input order; an empty sentence gives []."""
        beam_size = beam_size or self.decode.beam_size
        batch_size = batch_size or self.decode.batch_size
        limit = self.decode.max_src_len
        src = self.sp_src.encode([s.strip() for s in sentences])
        for i, ids in enumerate(src):
            if len(ids) > limit:
                log.warning(
                    "input line %d: %d subword tokens, translating only the first %d (decode.max_src_len)",
                    i + 1, len(ids), limit,
                )
                src[i] = ids[:limit]
        todo = sorted((i for i, ids in enumerate(src) if ids), key=lambda i: len(src[i]))  # similar lengths batch well
        workers = cpu_workers(self.device, self.decode.workers)
        if beam_size == 1:
            batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
        else:  # beam search keeps batch_size sentences in flight over a group of batches
            batches = in_flight_groups(todo, batch_size, workers)

        def decode(rows: list[int]) -> list[list[int]]:
            tokens, lengths = pad([src[i] for i in rows])
            limits = max_lengths(lengths, self.decode.max_len_a, self.decode.max_len_b)
            tokens, lengths = tokens.to(self.device), lengths.to(self.device)
            with autocast(self.device, self.decode.amp):
                if beam_size == 1:
                    return greedy_search(self.model, tokens, lengths, limits, BOS, EOS)
                return beam_search(
                    self.model, tokens, lengths, limits, BOS, EOS, beam_size, self.decode.length_penalty, in_flight=batch_size
                )

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

    def translate(self, sentences: list[str], beam_size: int | None = None, batch_size: int | None = None) -> list[str]:
        """Detokenized translations, one per sentence, in input order."""
        return [self.sp_tgt.decode(ids) for ids in self.translate_ids(sentences, beam_size, batch_size)]

    def pieces(self, ids: list[int]) -> str:
        """The raw model output: subword pieces joined by spaces."""
        return " ".join(self.sp_tgt.id_to_piece(ids))

    def evaluate(self, sources: list[str], refs: list[str], beam_size: int | None = None) -> tuple[dict, list[list[int]]]:
        """sacreBLEU BLEU and chrF of the translations of `sources` against `refs`, and the raw ids."""
        ids = self.translate_ids(sources, beam_size)
        return bleu_chrf([self.sp_tgt.decode(x) for x in ids], refs), ids
