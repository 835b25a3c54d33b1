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


def load(folder: str | Path, threads: int = 1) -> "OnnxTranslator | OnnxClassifier | OnnxTagger":
    """The runtime model of an exported folder, by its task."""
    folder = Path(folder)
    task = _meta(folder)["task"]
    if task == "translation":
        return OnnxTranslator(folder, threads)
    if task == "classification":
        return OnnxClassifier(folder, threads)
    if task == "tagging":
        return OnnxTagger(folder, threads)
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
        self.vocab_size = self.sp_tgt.get_piece_size()
        self.vocab_chunk = meta["vocab_chunk"]
        self.chunk_max: np.ndarray | None = None  # the last step's, (N, G)

    def encode(self, src: np.ndarray, lengths: np.ndarray) -> tuple[dict, tuple]:
        keys, states, mask, h, c, att = self.encoder.run(None, {"src": src, "src_lengths": lengths})
        return {"keys": keys, "states": states, "mask": mask}, (h, c, att)

    def step(self, prev: np.ndarray, state: tuple, memory: dict) -> tuple[np.ndarray, tuple]:
        """prev (N,) -> log-probabilities (N, V) and the new state; memory has N / K rows, K decoder rows each."""
        logp, self.chunk_max, h, c, att, _ = self.step_graph.run(None, {"prev": prev, "h": state[0], "c": state[1], "att": state[2], **memory})
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
        # Greedy in batches of batch_size; beam search keeps batch_size sentences in flight over groups of 16
        # batches (s2s.search.in_flight_groups with one worker, as Translator.translate_ids on one thread).
        step = batch_size if beam_size == 1 else 16 * batch_size
        for start in range(0, len(todo), step):
            rows = todo[start : start + step]
            tokens, lengths = _pad([src[i] for i in rows])
            limits = (lengths.astype(np.float32) * np.float32(self.meta["max_len_a"])).astype(np.int64) + self.meta["max_len_b"]
            if beam_size == 1:
                found = greedy_search(self, tokens, lengths, limits)
            else:
                found = [max(h, key=lambda x: x.score).tokens
                         for h in beam_hypotheses(self, tokens, lengths, limits, beam_size, self.alpha, in_flight=batch_size)]
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


def best_extensions(logp: np.ndarray, scores: np.ndarray, k: int, chunk: int = VOCAB_CHUNK,
                    chunk_max: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k best one-token extensions of each sentence's beams, best first: their scores, the beam each extends
    and its token, each (n, k). logp (n * width, V), scores (n, width); chunk_max (n * width, G), when given, each
    chunk's best log-probability (the step graph computes them). As s2s.search.best_extensions: each chunk of
    `chunk` tokens is bounded by its best log-probability, the k best extensions lie in the k chunks with the best
    bounds, so the selection runs over width * V / chunk bounds and k * chunk candidates, not width * V."""
    n, width = scores.shape
    V = logp.shape[1]
    if chunk_max is None:
        full = V - V % chunk
        bounds = [logp[:, :full].reshape(n * width, -1, chunk).max(-1)] if full else []
        if full < V:  # the last, shorter chunk
            bounds.append(logp[:, full:].max(-1, keepdims=True))
        chunk_max = np.concatenate(bounds, axis=1)  # (n*width, G)
    bound = chunk_max
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


# beam_hypotheses with in_flight refills its batch when 1 / REFILL_FREE of it is free, as s2s.search's.
REFILL_FREE = 4


def _join(state: tuple, other: tuple) -> tuple:
    return np.concatenate([state[0], other[0]], 1), np.concatenate([state[1], other[1]], 1), np.concatenate([state[2], other[2]])


def _join_memory(memory: dict, other: dict) -> dict:
    """This batch's rows, then other's, padded to the longer source (zero keys and states, mask False)."""
    length = max(memory["mask"].shape[1], other["mask"].shape[1])
    grow = lambda x: np.pad(x, [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2))  # noqa: E731
    return {k: np.concatenate([grow(memory[k]), grow(other[k])]) for k in memory}


def beam_hypotheses(model: OnnxTranslator, src: np.ndarray, lengths: np.ndarray, limits: np.ndarray, beam_size: int,
                    alpha: float = 1.0, in_flight: int = 0) -> list[list[Hypothesis]]:
    """s2s.search.beam_hypotheses over numpy: each sentence's finished hypotheses, in the order they finished.

    At most in_flight sentences (0: all) decode at once, the next ones (in the order given) joining as others end.
    A batch that starts empty gives each sentence one row (its beams are all equal) and fans out to K at the
    first step; sentences joining a running batch start with K rows, all but the first scored -inf. A sentence
    ends when its best candidate ends in EOS or at its length limit."""
    K = beam_size
    total = src.shape[0]
    in_flight = in_flight or total
    fan_out = model.vocab_size >= K
    alive = born = deadline = prev = np.zeros(0, dtype=np.int64)
    history = np.zeros((0, 0), dtype=np.int64)  # (n*width, t - base): the tokens of steps base..t-1
    state = memory = scores = None
    finished: list[list[Hypothesis]] = [[] for _ in range(total)]
    started = base = t = 0
    width = K
    while True:
        n = alive.size
        if started < total and (n == 0 or in_flight - n >= max(1, in_flight // REFILL_FREE)):
            count = min(in_flight - n, total - started)
            new_lengths = lengths[started : started + count]
            new_memory, new_state = model.encode(src[started : started + count, : int(new_lengths.max())], new_lengths)
            if n == 0:
                width = 1 if fan_out else K
            if width > 1:
                new_state = _select(new_state, np.repeat(np.arange(count), width))
            new_scores = np.full((count, width), -np.inf, dtype=np.float32)
            new_scores[:, 0] = 0.0
            if n == 0:
                memory, state, scores = new_memory, new_state, new_scores
            else:
                memory, state, scores = _join_memory(memory, new_memory), _join(state, new_state), np.concatenate([scores, new_scores])
            alive = np.concatenate([alive, np.arange(started, started + count)])
            born = np.concatenate([born, np.full(count, t)])
            deadline = np.concatenate([deadline, t + limits[started : started + count]])
            history = np.concatenate([history, np.zeros((count * width, history.shape[1]), dtype=np.int64)])
            prev = np.concatenate([prev, np.full(count * width, BOS, dtype=np.int64)])
            started += count
            n = alive.size
        if n == 0:
            break
        logp, state = model.step(prev, state, memory)  # (n*width, V)
        chunk_max = model.chunk_max
        at_limit = deadline <= t + 1  # (n,)
        if at_limit.any():  # only EOS may follow at the limit
            rows = np.nonzero(np.repeat(at_limit, width))[0]
            eos = logp[rows, EOS].copy()
            logp[rows] = -np.inf
            logp[rows, EOS] = eos
            chunk_max[rows] = -np.inf
            chunk_max[rows, EOS // model.vocab_chunk] = eos
        top, origin, tokens = best_extensions(logp, scores, K, model.vocab_chunk, chunk_max)  # (n, K) each, best first
        rows = (np.arange(n)[:, None] * width + origin).reshape(-1)
        history = np.concatenate([history[rows], tokens.reshape(-1, 1)], axis=1)
        state, width = _select(state, rows), K
        is_eos = tokens == EOS
        for i, j in zip(*np.nonzero(is_eos)):
            if top[i, j] > -np.inf:
                score, b = float(top[i, j]), int(born[i])
                hyp = history[i * K + j, b - base : -1].tolist()
                finished[int(alive[i])].append(Hypothesis(hyp, score, score / length_penalty(t + 1 - b, alpha)))
        scores = np.where(is_eos, -np.inf, top).astype(np.float32)
        done = is_eos[:, 0] | at_limit
        if done.any():
            keep = np.nonzero(~done)[0]
            keep_rows = (keep[:, None] * K + np.arange(K)).reshape(-1)
            alive, born, deadline, scores = alive[keep], born[keep], deadline[keep], scores[keep]
            history, tokens = history[keep_rows], tokens[keep]
            if alive.size:  # forget the steps before the oldest live sentence began
                oldest = int(born.min())
                history, base = history[:, oldest - base :], oldest
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


def runs_of(lengths: list[int], docs: list[int], max_tokens: int) -> list[list[int]]:
    """s2s.tasks.tagging.runs_of, again: that module imports torch. Consecutive non-empty sentences of one document
    in runs of at most max_tokens tokens (a longer sentence is a run of its own), which the encoder reads as one text."""
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


def viterbi(emissions: np.ndarray, lengths: np.ndarray, trans: np.ndarray, start: np.ndarray, end: np.ndarray) -> list[list[int]]:
    """s2s.nn.crf.viterbi over numpy: the best tag sequence per sentence; emissions (S, L, K)."""
    s_count, t_len, k = emissions.shape
    score = start + emissions[:, 0]  # (S, K)
    pointers = []
    for t in range(1, t_len):
        cand = score[:, :, None] + trans  # (S, K, K)
        idx, best = cand.argmax(1), cand.max(1)
        real = (t < lengths)[:, None]
        score = np.where(real, best + emissions[:, t], score)
        pointers.append(np.where(real, idx, np.arange(k)))  # the identity on padding
    last = (score + end).argmax(1)
    path = [last]
    for bp in reversed(pointers):
        last = np.take_along_axis(bp, last[:, None], 1)[:, 0]
        path.append(last)
    tags = np.stack(path[::-1], 1).tolist()
    return [row[:n] for row, n in zip(tags, lengths.tolist())]


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return np.log(np.exp(x - top).sum(axis=axis)) + np.squeeze(top, axis)


def marginals(emissions: np.ndarray, lengths: np.ndarray, trans: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """s2s.nn.crf.CRF.marginals over numpy: p(y_t = k | x) (S, L, K) by forward-backward; 0 on padding."""
    s_count, t_len, _ = emissions.shape
    real = np.arange(t_len)[None, :] < lengths[:, None]  # (S, L)
    alphas = [start + emissions[:, 0]]
    for t in range(1, t_len):
        nxt = _logsumexp(alphas[-1][:, :, None] + trans, 1) + emissions[:, t]
        alphas.append(np.where(real[:, t, None], nxt, alphas[-1]))
    betas = [np.broadcast_to(end, alphas[0].shape)]
    for t in range(t_len - 2, -1, -1):
        nxt = _logsumexp(trans[None] + (emissions[:, t + 1] + betas[-1])[:, None, :], 2)
        betas.append(np.where(real[:, t + 1, None], nxt, betas[-1]))
    alpha, beta = np.stack(alphas, 1), np.stack(betas[::-1], 1)
    log_z = _logsumexp(alphas[-1] + end, 1)
    return np.exp(alpha + beta - log_z[:, None, None]) * real[:, :, None]


class OnnxTagger:
    """The tagger's emission graph, the CRF's Viterbi and marginals in numpy; raw text tokenised as s2s.tasks.tagging
    does (s2s.data.tokenize.tokenize), the batch laid out as its make_batch does. Sentences are tagged whole (the
    torch path cuts sentences over 1,000 tokens into overlapping pieces); ensembles are not exported."""

    def __init__(self, folder: Path, threads: int = 1):
        from s2s.data.vocab import Vocabulary, load_json

        self.meta = meta = _meta(folder)
        self.session = _session(folder / meta["graphs"]["tagger"], threads)
        data = load_json(folder / meta["vocab"], ("words", "chars", "tags", "lowercase"), "tagging vocabularies")
        self.words, self.chars, self.tags = Vocabulary(data["words"]), Vocabulary(data["chars"]), list(data["tags"])
        self.lowercase = data["lowercase"]
        self.trans, self.start, self.end = (np.array(meta[k], dtype=np.float32) for k in ("trans", "start", "end"))

    def features(self, token: str) -> tuple[int, int, list[int]]:
        """(word id, case id, char ids), as TagVocab.features."""
        from s2s.data.features import case_id, clip_word
        from s2s.data.tokenize import normalize

        return self.words.encode([normalize(token, self.lowercase)])[0], case_id(token), self.chars.encode(clip_word(token))

    def batch(self, sentences: list[list[str]], run_sizes: list[int]) -> dict[str, np.ndarray]:
        """The graph's inputs for `sentences` read in runs of `run_sizes` consecutive sentences (tagging.make_batch)."""
        feats = [[self.features(w) for w in s] for s in sentences]
        starts = np.cumsum([0] + run_sizes)
        runs = [range(starts[i], starts[i + 1]) for i in range(len(run_sizes))]
        run_lengths = [sum(len(sentences[i]) for i in run) for run in runs]
        t, longest = max(run_lengths), max(len(s) for s in sentences)
        c = max(len(f[2]) for fs in feats for f in fs)
        words, cases, keys = (np.zeros((len(runs), t), dtype=np.int64) for _ in range(3))
        chars = np.zeros((len(runs), t, c), dtype=np.int64)
        positions = np.zeros((len(sentences), longest), dtype=np.int64)
        key_of: dict[str, int] = {}
        for r, run in enumerate(runs):
            j = 0
            for i in run:
                positions[i, : len(sentences[i])] = np.arange(r * t + j, r * t + j + len(sentences[i]))
                for w, (word, case, char_ids) in zip(sentences[i], feats[i]):
                    words[r, j], cases[r, j], keys[r, j] = word, case, key_of.setdefault(w.lower(), len(key_of) + 1)
                    chars[r, j, : len(char_ids)] = char_ids
                    j += 1
        return {"words": words, "chars": chars, "cases": cases, "lengths": np.array(run_lengths, dtype=np.int64), "word_keys": keys,
                "positions": positions, "sentence_lengths": np.array([len(s) for s in sentences], dtype=np.int64)}

    def tag_tokens(self, sentences: list[list[str]], docs: list[int] | None = None) -> list[list[tuple[tuple[int, int, str], float]]]:
        """Entity spans ((start, end, type), score) per tokenised sentence, as Tagger.tag_tokens."""
        from s2s.data.schemes import spans

        docs = docs or [0] * len(sentences)
        out: list[list] = [[] for _ in sentences]
        runs = sorted(runs_of([len(s) for s in sentences], docs, self.meta["context_tokens"]),
                      key=lambda run: sum(len(sentences[i]) for i in run))
        sizes = [sum(len(sentences[i]) for i in run) for run in runs]
        start = 0
        while start < len(runs):  # batches of whole runs, at most batch_size sentences and batch_tokens padded tokens
            end, count = start + 1, len(runs[start])
            while (end < len(runs) and count + len(runs[end]) <= self.meta["batch_size"]
                   and (end - start + 1) * sizes[end] <= self.meta["batch_tokens"]):
                count += len(runs[end])
                end += 1
            group = runs[start:end]
            rows = [i for run in group for i in run]
            inputs = self.batch([sentences[i] for i in rows], [len(run) for run in group])
            # The graph takes only the inputs the model uses (no word_keys without same-word pooling, ...).
            emissions = self.session.run(None, {i.name: inputs[i.name] for i in self.session.get_inputs()})[0]  # (S, L, K)
            lengths = inputs["sentence_lengths"]
            if not self.meta["crf"]:  # constrained Viterbi over per-token log-probabilities
                emissions = emissions - _logsumexp(emissions, 2)[:, :, None]
                probs = np.exp(emissions)
            else:
                probs = marginals(emissions, lengths, self.trans, self.start, self.end)
            for j, (i, path) in enumerate(zip(rows, viterbi(emissions, lengths, self.trans, self.start, self.end))):
                p = [float(probs[j, t, k]) for t, k in enumerate(path)]
                out[i] = [(s, sum(p[s[0] : s[1]]) / (s[1] - s[0])) for s in spans([self.tags[k] for k in path], self.meta["scheme"])]
            start = end
        return out

    def tag(self, texts: list[str]) -> list[dict]:
        """{"text", "tokens", "entities": [{"text", "type", "start", "end", "char_start", "char_end", "score"}]} per raw
        sentence, as Tagger.tag's records; consecutive sentences are one document, an empty one ends it."""
        import itertools

        from s2s.data.tokenize import tokenize

        tokenized = [tokenize(t) for t in texts]
        docs = list(itertools.accumulate(not tokens for tokens, _ in tokenized))
        found = self.tag_tokens([tokens for tokens, _ in tokenized], docs)
        records = []
        for text, (tokens, offsets), ents in zip(texts, tokenized, found):
            records.append({"text": text, "tokens": tokens, "entities": [
                {"text": text[offsets[s][0] : offsets[e - 1][1]], "type": kind, "start": s, "end": e, "char_start": offsets[s][0],
                 "char_end": offsets[e - 1][1], "score": round(score, 4)} for (s, e, kind), score in ents]})
        return records
