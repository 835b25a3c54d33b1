"""Continuous batching for translation: sentences join a running beam search as others leave it.

Batching requests into rounds (s2s.serve.batcher) leaves a beam search's batch shrinking as its sentences end:
the last steps of a round decode a few long sentences at nearly the cost of a full batch (on a CPU a step's time
goes to reading the weights), while the clients of the finished sentences wait for the round to end. Here one
thread per (model, beam size) keeps a beam search running: a sentence's answer goes out the step it ends, and
new sentences join the batch whenever a quarter of it is free, as s2s.search.beam_hypotheses refills from its
`in_flight` queue.

The loop is s2s.search.beam_hypotheses' (the same refill, fan-out, length limits, s2s.search.best_extensions and
length normalisation, so a sentence gets the same translation), written again because that function decodes a
fixed list of sentences and returns only when all are done; a hook there to take sentences from a queue and
hand each one back when it ends would let this module shrink to the thread and the queue.
"""
from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future

import torch

from s2s.data.batching import pad
from s2s.data.sentencepiece import BOS, EOS
from s2s.device import autocast
from s2s.search import REFILL_FREE, VOCAB_CHUNK, best_extensions, length_penalty, max_lengths

log = logging.getLogger(__name__)


class StreamingTranslator:
    """submit(ids) -> a Future of the target ids of one sentence's best translation (beam `beam_size`)."""

    def __init__(self, translator, beam_size: int, in_flight: int = 64, queue_size: int = 1024, threads: int = 1):
        self.translator, self.model, self.beam_size, self.in_flight = translator, translator.model, beam_size, in_flight
        self.queue: queue.Queue = queue.Queue(queue_size)
        self.threads = threads
        self._stop = False
        self._futures: list[Future] = []  # the sentences in flight
        self.steps = self.sentence_steps = 0  # decoding steps run, and the sentences in flight summed over them (/health)
        self._thread = threading.Thread(target=self._run, name=f"s2s-stream-beam{beam_size}", daemon=True)
        self._thread.start()

    def submit(self, ids: list[int]) -> Future:
        """Raises queue.Full when queue_size sentences are waiting."""
        future: Future = Future()
        if not ids:
            future.set_result([])
        else:
            self.queue.put_nowait((ids, future))
        return future

    def stop(self) -> None:
        self._stop = True
        self.queue.put(None)  # wakes the thread if it waits
        self._thread.join()

    def _take(self, room: int, block: bool) -> list[tuple[list[int], Future]]:
        """Up to `room` waiting sentences (waiting for the first one when `block`), skipping cancelled ones."""
        jobs = []
        while len(jobs) < room and not self._stop:
            try:
                job = self.queue.get(block=block and not jobs)
            except queue.Empty:
                break
            if job is None:
                break
            if job[1].set_running_or_notify_cancel():  # False: the request timed out or went away
                jobs.append(job)
        return jobs

    def _run(self) -> None:
        torch.set_num_threads(self.threads)
        with torch.no_grad(), autocast(self.translator.device, self.translator.decode.amp):
            while not self._stop:
                try:
                    self._decode()
                except Exception as e:  # fail the sentences in flight, keep serving
                    log.exception("streaming beam search failed")
                    for future in self._futures:
                        if not future.done():
                            future.set_exception(e)

    def _decode(self) -> None:
        """Decode until the batch empties and nothing waits; see s2s.search.beam_hypotheses for the steps."""
        model, K, device = self.model, self.beam_size, self.translator.device
        search = self.translator.search
        fan_out = model.vocab_size >= K
        self._futures = []
        finished: list[list[tuple[float, list[int]]]] = []  # (length-normalised score, tokens) per sentence in flight
        born = torch.empty(0, dtype=torch.long, device=device)
        deadline = torch.empty_like(born)
        history = torch.empty(0, 0, dtype=torch.long, device=device)
        prev = torch.empty_like(born)
        state = memory = scores = None
        base = width = t = 0
        while not self._stop:
            n = len(self._futures)
            if n == 0 or self.in_flight - n >= max(1, self.in_flight // REFILL_FREE):
                jobs = self._take(self.in_flight - n, block=n == 0)
                if not jobs and n == 0:
                    return
                if jobs:
                    count = len(jobs)
                    tokens, lengths = pad([ids for ids, _ in jobs])
                    limits = max_lengths(lengths, search.max_len_a, search.max_len_b)
                    new_memory = model.encode(tokens.to(device), lengths.to(device))
                    if n == 0:
                        width, t, base = (1 if fan_out else K), 0, 0
                        history = history.new_zeros(0, 0)
                    new_state = model.init_state(new_memory)
                    if width > 1:
                        new_state = new_state.select(torch.arange(count, device=device).repeat_interleave(width))
                    new_scores = torch.full((count, width), float("-inf"), device=device)
                    new_scores[:, 0] = 0.0
                    if n == 0:
                        memory, state, scores = new_memory, new_state, new_scores
                    else:
                        memory, state, scores = memory.join(new_memory), state.join(new_state), torch.cat([scores, new_scores])
                    born = torch.cat([born, torch.full((count,), t, dtype=torch.long, device=device)])
                    deadline = torch.cat([deadline, t + limits.to(device)])
                    history = torch.cat([history, history.new_zeros(count * width, history.size(1))])
                    prev = torch.cat([prev, torch.full((count * width,), BOS, dtype=torch.long, device=device)])
                    self._futures += [future for _, future in jobs]
                    finished += [[] for _ in jobs]
                    n += count
            logits, state, _ = model.step(prev, state, memory)
            self.steps, self.sentence_steps = self.steps + 1, self.sentence_steps + n
            logp = torch.log_softmax(logits, dim=-1, dtype=torch.float32)  # (n*width, V)
            at_limit = deadline <= t + 1  # (n,)
            if bool(at_limit.any()):  # only EOS may follow at the limit
                rows = at_limit.repeat_interleave(width).nonzero().squeeze(1)
                eos_logp = logp[rows, EOS]
                logp.index_fill_(0, rows, float("-inf"))
                logp[rows, EOS] = eos_logp
            top_scores, origin, tokens = best_extensions(logp, scores, K, VOCAB_CHUNK)  # (n, K) each
            rows = (torch.arange(n, device=device).unsqueeze(1) * width + origin).view(-1)
            history = torch.cat([history.index_select(0, rows), tokens.view(-1, 1)], dim=1)
            state, width = state.select(rows), K
            is_eos = tokens == EOS
            if bool(is_eos.any()):
                for i, j in is_eos.nonzero().tolist():
                    score = float(top_scores[i, j])
                    if score > float("-inf"):
                        b = int(born[i])
                        finished[i].append((score / length_penalty(t + 1 - b, search.length_penalty), history[i * K + j, b - base : -1].tolist()))
            scores = top_scores.masked_fill(is_eos, float("-inf"))
            done = is_eos[:, 0] | at_limit
            if bool(done.any()):
                for i in done.nonzero().squeeze(1).tolist():  # answered the step it ends
                    best = max(finished[i], key=lambda h: h[0])[1] if finished[i] else []
                    if not self._futures[i].done():
                        self._futures[i].set_result(best)
                keep = (~done).nonzero().squeeze(1)
                keep_rows = (keep.unsqueeze(1) * K + torch.arange(K, device=device)).view(-1)
                kept = keep.tolist()
                self._futures, finished = [self._futures[i] for i in kept], [finished[i] for i in kept]
                born, deadline, scores = born[keep], deadline[keep], scores[keep]
                history, tokens = history.index_select(0, keep_rows), tokens[keep]
                if kept:  # forget the steps before the oldest live sentence began
                    oldest = int(born.min())
                    history, base = history[:, oldest - base :], oldest
                    state, memory = state.select(keep_rows), memory.select(keep)
                else:
                    state = memory = scores = None
                    prev = torch.empty(0, dtype=torch.long, device=device)
                    t += 1
                    continue
            prev = tokens.reshape(-1)
            t += 1

