"""Inference on a folder made by `s2s export --format onnx`, with onnxruntime, numpy and sentencepiece only: no torch.

    from s2s.onnx_runtime import load
    model = load("exported/")                 # OnnxTranslator or OnnxClassifier, by the export's task
    model.translate(["Ein Hund läuft."], beam_size=5)
    model.predict(["A fine film."])           # [{"label", "prob", "probs"}, ...]

Greedy and beam search are written again here over numpy arrays: s2s.search works on torch tensors and a
torch model, and this module must run where torch is not installed. They follow s2s.search step for step
(the same length limits, the same GNMT length normalisation, a sentence ends when its best candidate ends in
EOS), and tests/test_onnx.py checks their outputs against s2s.search's on a tiny model. Only the tokenizers
and text helpers of s2s.data that import no torch are used.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s2s.errors import S2SError

log = logging.getLogger(__name__)

META = "onnx.json"
PAD, UNK, BOS, EOS = 0, 1, 2, 3  # s2s.data.sentencepiece's ids (not imported: its module is light, but keep this one free-standing)


def _session(path: Path, threads: int):
    try:
        import onnxruntime as ort
    except ImportError:
        raise S2SError('onnx_runtime needs onnxruntime: pip install -e ".[onnx]"') from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _meta(folder: Path) -> dict:
    path = folder / META
    if not path.is_file():
        raise S2SError(f"{folder}: no {META}; make the folder with `s2s export --format onnx`")
    return json.loads(path.read_text(encoding="utf-8"))


def load(folder: str | Path, threads: int = 1) -> "OnnxTranslator | OnnxClassifier":
    """The runtime model of an exported folder, by its task."""
    folder = Path(folder)
    task = _meta(folder)["task"]
    if task == "translation":
        return OnnxTranslator(folder, threads)
    if task == "classification":
        return OnnxClassifier(folder, threads)
    raise S2SError(f"{folder}: no ONNX runtime for {task} exports")


def _pad(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """As s2s.data.batching.pad: (B, T) int64 padded with PAD, and the lengths (B,)."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    out = np.zeros((len(seqs), int(lengths.max())), dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, lengths


def length_penalty(length: int, alpha: float) -> float:
    """GNMT length normalisation ((5 + |Y|) / 6) ** alpha (Wu et al. 2016, eq. 14), as s2s.search's."""
    return ((5.0 + length) / 6.0) ** alpha


@dataclass
class Hypothesis:
    tokens: list[int]  # without EOS
    logprob: float
    score: float


class OnnxTranslator:
    """Encoder and decoder-step graphs, SentencePiece on both sides, search in numpy."""

    def __init__(self, folder: Path, threads: int = 1):
        from s2s.data.sentencepiece import load_sentencepiece

        self.meta = meta = _meta(folder)
        self.encoder = _session(folder / meta["graphs"]["encoder"], threads)
        self.step_graph = _session(folder / meta["graphs"]["step"], threads)
        src, tgt = meta["tokenizers"]
        self.sp_src, self.sp_tgt = load_sentencepiece(folder / src), load_sentencepiece(folder / tgt)
        self.beam_size, self.alpha = meta["beam_size"], meta["length_penalty"]

    def encode(self, src: np.ndarray, lengths: np.ndarray) -> tuple[dict, tuple]:
        keys, states, mask, h, c, att = self.encoder.run(None, {"src": src, "src_lengths": lengths})
        return {"keys": keys, "states": states, "mask": mask}, (h, c, att)

    def step(self, prev: np.ndarray, state: tuple, memory: dict) -> tuple[np.ndarray, tuple]:
        """prev (N,) -> log-probabilities (N, V) and the new state; memory has N / K rows, K decoder rows each."""
        logp, h, c, att, _ = self.step_graph.run(None, {"prev": prev, "h": state[0], "c": state[1], "att": state[2], **memory})
        return logp, (h, c, att)

    def source_ids(self, sentences: list[str]) -> list[list[int]]:
        limit = self.meta["max_src_len"]
        return [ids[:limit] for ids in self.sp_src.encode([s.strip() for s in sentences])]

    def translate_ids(self, sentences: list[str], beam_size: int | None = None, batch_size: int | None = None) -> list[list[int]]:
        beam_size = beam_size or self.beam_size
        batch_size = batch_size or self.meta["batch_size"]
        src = self.source_ids(list(sentences))
        todo = sorted((i for i, ids in enumerate(src) if ids), key=lambda i: len(src[i]))
        out: list[list[int]] = [[] for _ in src]
        for start in range(0, len(todo), batch_size):
            rows = todo[start : start + batch_size]
            tokens, lengths = _pad([src[i] for i in rows])
            limits = (lengths.astype(np.float32) * np.float32(self.meta["max_len_a"])).astype(np.int64) + self.meta["max_len_b"]
            if beam_size == 1:
                found = greedy_search(self, tokens, lengths, limits)
            else:
                found = [max(h, key=lambda x: x.score).tokens for h in beam_hypotheses(self, tokens, lengths, limits, beam_size, self.alpha)]
            for i, hyp in zip(rows, found):
                out[i] = hyp
        return out

    def translate(self, sentences: list[str], beam_size: int | None = None, batch_size: int | None = None) -> list[str]:
        return [self.sp_tgt.decode(ids) for ids in self.translate_ids(sentences, beam_size, batch_size)]


def _select(state: tuple, index: np.ndarray) -> tuple:
    h, c, att = state
    return h[:, index], c[:, index], att[index]


def _select_memory(memory: dict, index: np.ndarray) -> dict:
    return {k: v[index] for k, v in memory.items()}


def greedy_search(model: OnnxTranslator, src: np.ndarray, lengths: np.ndarray, limits: np.ndarray) -> list[list[int]]:
    """s2s.search.greedy_search over numpy: the first maximum each step, EOS forced at each sentence's limit."""
    memory, state = model.encode(src, lengths)
    alive = np.arange(src.shape[0])
    prev = np.full(alive.shape, BOS, dtype=np.int64)
    out: list[list[int]] = [[] for _ in range(src.shape[0])]
    t = 0
    while alive.size:
        logp, state = model.step(prev, state, memory)
        tokens = logp.argmax(-1)
        tokens = np.where(limits <= t + 1, EOS, tokens)
        keep = tokens != EOS
        for row, tok in zip(alive[keep].tolist(), tokens[keep].tolist()):
            out[row].append(tok)
        if not keep.all():
            index = np.nonzero(keep)[0]
            alive, tokens, limits = alive[index], tokens[index], limits[index]
            state, memory = _select(state, index), _select_memory(memory, index)
        prev = tokens.astype(np.int64)
        t += 1
    return out


# Tokens per chunk in best_extensions, as s2s.search.VOCAB_CHUNK.
VOCAB_CHUNK = 64


def best_extensions(logp: np.ndarray, scores: np.ndarray, k: int, chunk: int = VOCAB_CHUNK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k best one-token extensions of each sentence's beams, best first: their scores, the beam each extends
    and its token, each (n, k). logp (n * width, V), scores (n, width). As s2s.search.best_extensions: each chunk
    of `chunk` tokens is bounded by its best log-probability, the k best extensions lie in the k chunks with the
    best bounds, so the selection runs over width * V / chunk bounds and k * chunk candidates, not width * V."""
    n, width = scores.shape
    V = logp.shape[1]
    full = V - V % chunk
    bounds = [logp[:, :full].reshape(n * width, -1, chunk).max(-1)] if full else []
    if full < V:  # the last, shorter chunk
        bounds.append(logp[:, full:].max(-1, keepdims=True))
    bound = np.concatenate(bounds, axis=1)  # (n*width, G)
    G = bound.shape[1]
    bound = (bound + scores.reshape(-1, 1)).reshape(n, width * G)
    p = min(k, width * G)
    pair = np.argpartition(-bound, p - 1, axis=1)[:, :p] if p < width * G else np.broadcast_to(np.arange(width * G), (n, p))
    beam = pair // G
    token = ((pair % G) * chunk)[:, :, None] + np.arange(chunk)  # (n, p, chunk)
    past_end = (token >= V).reshape(n, -1)
    flat = (beam[:, :, None] * V + np.minimum(token, V - 1)).reshape(n, -1)  # into a sentence's width * V
    cand = np.take_along_axis(logp.reshape(n, width * V), flat, 1) + np.repeat(np.take_along_axis(scores, beam, 1), chunk, axis=1)
    cand[past_end] = -np.inf
    part = np.argpartition(-cand, k - 1, axis=1)[:, :k] if k < cand.shape[1] else np.broadcast_to(np.arange(cand.shape[1]), (n, k))
    top = np.take_along_axis(cand, part, 1)
    order = np.argsort(-top, axis=1, kind="stable")
    top, part = np.take_along_axis(top, order, 1), np.take_along_axis(part, order, 1)
    flat = np.take_along_axis(flat, part, 1)
    return top, flat // V, flat % V


def beam_hypotheses(model: OnnxTranslator, src: np.ndarray, lengths: np.ndarray, limits: np.ndarray, beam_size: int,
                    alpha: float = 1.0) -> list[list[Hypothesis]]:
    """s2s.search.beam_hypotheses (without refilling: every sentence starts at once): each sentence's finished
    hypotheses. A sentence starts with one row (all its beams are equal), fans out to K at the first step, and
    ends when its best candidate ends in EOS or at its length limit."""
    K = beam_size
    total = src.shape[0]
    memory, state = model.encode(src, lengths)
    alive = np.arange(total)
    scores = np.zeros((total, 1), dtype=np.float32)  # (n, width)
    history = np.zeros((total, 0), dtype=np.int64)  # (n*width, t)
    prev = np.full(total, BOS, dtype=np.int64)
    finished: list[list[Hypothesis]] = [[] for _ in range(total)]
    width, t = 1, 0
    while alive.size:
        n = alive.size
        logp, state = model.step(prev, state, memory)  # (n*width, V)
        V = logp.shape[1]
        at_limit = limits <= t + 1  # (n,)
        if at_limit.any():  # only EOS may follow at the limit
            rows = np.nonzero(np.repeat(at_limit, width))[0]
            eos = logp[rows, EOS].copy()
            logp[rows] = -np.inf
            logp[rows, EOS] = eos
        k = min(K, width * V)
        top, origin, tokens = best_extensions(logp, scores, k)  # (n, k) each, best first
        rows = (np.arange(n)[:, None] * width + origin).reshape(-1)
        history = np.concatenate([history[rows], tokens.reshape(-1, 1)], axis=1)
        state, width = _select(state, rows), k
        is_eos = tokens == EOS
        for i, j in zip(*np.nonzero(is_eos)):
            if top[i, j] > -np.inf:
                score = float(top[i, j])
                finished[int(alive[i])].append(Hypothesis(history[i * k + j, :-1].tolist(), score, score / length_penalty(t + 1, alpha)))
        scores = np.where(is_eos, -np.inf, top).astype(np.float32)
        done = is_eos[:, 0] | at_limit
        if done.any():
            keep = np.nonzero(~done)[0]
            keep_rows = (keep[:, None] * k + np.arange(k)).reshape(-1)
            alive, limits, scores = alive[keep], limits[keep], scores[keep]
            history, tokens = history[keep_rows], tokens[keep]
            state, memory = _select(state, keep_rows), _select_memory(memory, keep)
        prev = tokens.reshape(-1).astype(np.int64)
        t += 1
    return finished


class OnnxClassifier:
    """The whole classifier as one graph; texts tokenised and truncated as s2s.tasks.classification does."""

    def __init__(self, folder: Path, threads: int = 1):
        from s2s.data.vocab import Vocabulary, load_json

        self.meta = meta = _meta(folder)
        self.session = _session(folder / meta["graphs"]["classifier"], threads)
        data = load_json(folder / meta["vocab"], ("words", "labels"), "classification vocabulary")
        self.words, self.labels = Vocabulary(data["words"]), list(data["labels"])

    def encode(self, text: str) -> list[int]:
        from s2s.data.tokenize import text_tokens, truncate

        tokens = truncate(text_tokens(text, self.meta["lowercase"]), self.meta["max_text_tokens"], self.meta["truncate"])
        return self.words.encode(tokens) or [self.words.unk]

    def probs(self, ids: list[list[int]], batch_size: int | None = None) -> np.ndarray:
        batch_size = batch_size or self.meta["batch_size"]
        out = np.zeros((len(ids), len(self.labels)), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            tokens, lengths = _pad([ids[i] for i in rows])
            out[rows] = self.session.run(None, {"tokens": tokens, "lengths": lengths})[0]
        return out

    def predict(self, texts: list[str], batch_size: int | None = None) -> list[dict | None]:
        """{"label", "prob", "probs"} per text, as Classifier.predict's Prediction; None for an empty text."""
        todo = [i for i, t in enumerate(texts) if t.strip()]
        probs = self.probs([self.encode(texts[i]) for i in todo], batch_size)
        out: list[dict | None] = [None] * len(texts)
        for i, row in zip(todo, probs.tolist()):
            best = max(range(len(row)), key=row.__getitem__)
            out[i] = {"label": self.labels[best], "prob": row[best], "probs": dict(zip(self.labels, row))}
        return out
