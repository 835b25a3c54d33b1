"""Request batching: items from concurrent requests that arrive within a few milliseconds go through the model together.

A recurrent model's step costs nearly the same for one sentence as for sixteen on a CPU (its time goes to
reading the weights), so sixteen clients sending one sentence each are served at close to batch throughput
only if their sentences are decoded as one batch. The batcher keeps a bounded queue of waiting items; one
asyncio task takes the oldest and whatever joins it within `max_wait` seconds (up to `max_batch` items),
groups them by key (model and search settings: only items decoded the same way can share a batch) and runs
each group in a worker thread, so decoding never blocks the event loop.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """More items are waiting than the queue holds: the caller should answer 503 and the client retry later."""


@dataclass(eq=False)  # compared by identity: a cancelled request removes its own item from the queue
class _Item:
    key: Hashable
    items: list[Any]
    future: asyncio.Future
    arrival: float = field(default_factory=time.monotonic)


class Batcher:
    """`await batcher.submit(key, items)` -> run(key, items) of the batch it went through, cut back to its items.

    run(key, items) -> one result per item, in order; it runs in `executor` (a thread), several requests' items
    joined. An item list longer than max_batch is run whole, in a batch of its own."""

    def __init__(self, run: Callable[[Hashable, list], list], executor: Executor, max_batch: int = 64,
                 max_wait: float = 0.005, queue_size: int = 1024):
        self.run, self.executor = run, executor
        self.max_batch, self.max_wait, self.queue_size = max_batch, max_wait, queue_size
        self.waiting: deque[_Item] = deque()
        self.pending = 0  # items waiting in the queue
        self.batches = 0  # batches run, for /health
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for item in self.waiting:  # nothing should be left after a graceful shutdown; never leave a client hanging
            if not item.future.done():
                item.future.set_exception(RuntimeError("server shutting down"))
        self.waiting.clear()

    async def submit(self, key: Hashable, items: list) -> list:
        if self._task is None:
            raise RuntimeError("Batcher.start() was not called")
        if self.pending + len(items) > self.queue_size and self.pending:
            raise QueueFull(f"{self.pending} items are waiting (the queue holds {self.queue_size})")
        item = _Item(key, list(items), asyncio.get_running_loop().create_future())
        self.waiting.append(item)
        self.pending += len(items)
        self._wake.set()
        try:
            return await item.future
        except asyncio.CancelledError:  # timed out or the client went away: it is not decoded if still waiting
            with contextlib.suppress(ValueError):
                self.waiting.remove(item)
                self.pending -= len(items)
            raise

    async def _loop(self) -> None:
        while True:
            while not self.waiting:
                self._wake.clear()
                await self._wake.wait()
            # Wait for company until max_wait after the oldest item arrived or a full batch is queued.
            while self.pending < self.max_batch:
                left = self.waiting[0].arrival + self.max_wait - time.monotonic()
                if left <= 0:
                    break
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), left)
                if not self.waiting:
                    break
            batch, count = [], 0
            while self.waiting and (not batch or count + len(self.waiting[0].items) <= self.max_batch):
                item = self.waiting.popleft()
                self.pending -= len(item.items)
                if not item.future.done():
                    batch.append(item)
                    count += len(item.items)
            groups: dict[Hashable, list[_Item]] = {}
            for item in batch:
                groups.setdefault(item.key, []).append(item)
            for key, members in groups.items():
                await self._run_group(key, members)

    async def _run_group(self, key: Hashable, members: list[_Item]) -> None:
        joined = [x for m in members for x in m.items]
        try:
            results = await asyncio.get_running_loop().run_in_executor(self.executor, self.run, key, joined)
        except Exception as e:  # one bad batch fails its requests, never the batcher
            log.exception("batch of %d items failed", len(joined))
            for m in members:
                if not m.future.done():
                    m.future.set_exception(e)
            return
        self.batches += 1
        start = 0
        for m in members:
            if not m.future.done():
                m.future.set_result(results[start : start + len(m.items)])
            start += len(m.items)
