"""Continuous batching for translation: sentences join a running beam search as others leave it.

Batching requests into rounds (s2s.serve.batcher) leaves a beam search's batch shrinking as its sentences end:
the last steps of a round decode a few long sentences at nearly the cost of a full batch (on a CPU a step's time
goes to reading the weights), while the clients of the finished sentences wait for the round to end. Here one
thread per (model, beam size) keeps a beam search running: a sentence's answer goes out the step it ends, and
new sentences join the batch whenever a quarter of it is free, as s2s.search.beam_hypotheses refills from its
`in_flight` queue.

The search is s2s.search.beam_steps, the loop beam_hypotheses runs, fed from the queue here instead of a fixed
list (so a sentence gets the same translation); this module is the thread and the queue.
"""
from __future__ import annotations

import itertools
import logging
import queue
import threading
from concurrent.futures import Future

import torch

from s2s.data.batching import pad
from s2s.data.sentencepiece import BOS, EOS
from s2s.device import autocast
from s2s.search import Hypothesis, beam_steps, max_lengths

log = logging.getLogger(__name__)


class StreamingTranslator:
    """submit(ids) -> a Future of the target ids of one sentence's best translation (beam `beam_size`)."""

    def __init__(self, translator, beam_size: int, in_flight: int = 64, queue_size: int = 1024, threads: int = 1):
        self.translator, self.model, self.beam_size, self.in_flight = translator, translator.model, beam_size, in_flight
        self.queue: queue.Queue = queue.Queue(queue_size)
        self.threads = threads
        self._stop = False
        self._futures: dict[int, Future] = {}  # the sentences in flight, by their number in beam_steps
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
                    for future in self._futures.values():
                        if not future.done():
                            future.set_exception(e)

    def _decode(self) -> None:
        """Decode until the batch empties and nothing waits."""
        search, device = self.translator.search, self.translator.device
        self._futures = {}
        numbers = itertools.count()  # beam_steps numbers sentences in the order the source gives them

        def source(room: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
            jobs = self._take(room, block=room == self.in_flight)  # nothing in flight: wait for a sentence
            if not jobs:
                return None
            for _, future in jobs:
                self._futures[next(numbers)] = future
            tokens, lengths = pad([ids for ids, _ in jobs])
            return tokens.to(device), lengths.to(device), max_lengths(lengths, search.max_len_a, search.max_len_b)

        def on_finished(number: int, hyps: list[Hypothesis]) -> None:  # answered the step its sentence ends
            future = self._futures.pop(number)
            if not future.done():
                future.set_result(max(hyps, key=lambda h: h.score).tokens if hyps else [])

        for n in beam_steps(self.model, source, on_finished, BOS, EOS, self.beam_size, search.length_penalty, self.in_flight):
            self.steps, self.sentence_steps = self.steps + 1, self.sentence_steps + n
            if self._stop:
                return
