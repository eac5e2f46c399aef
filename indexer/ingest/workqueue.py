"""Deduplicated background work whose results are written in batches: audio checks, handle lookups.

A key stays claimed from submit until its result is committed. A key submitted again meanwhile is
dropped, which is safe because the writer is serial: a track stored before the result commits is updated
by it, and one stored after finds the fresh result. Unfinished work is simply lost on stop: the store
still marks it pending and the next start submits it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
K = TypeVar("K")
R = TypeVar("R")


class WorkQueue(Generic[K, R]):
    def __init__(
        self,
        name: str,
        work: Callable[[K], Awaitable[R]],
        record: Callable[[list[R]], Awaitable[None]],
        *,
        concurrency: int,
        batch_size: int = 256,
        batch_seconds: float = 0.25,
    ) -> None:
        self.name = name
        self._work = work
        self._record = record
        self._concurrency = concurrency
        self._batch_size = batch_size
        self._batch_seconds = batch_seconds
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._claimed: set[K] = set()
        self._done: list[tuple[K, R]] = []
        self._full = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, keys: Iterable[K]) -> int:
        """Queue keys not already claimed; returns how many were new."""
        added = 0
        for key in keys:
            if key not in self._claimed:
                self._claimed.add(key)
                self._queue.put_nowait(key)
                added += 1
        if added:
            self._idle.clear()
        return added

    @property
    def outstanding(self) -> int:
        return len(self._claimed)

    async def join(self) -> None:
        """Wait until everything submitted so far has been recorded (tests and benchmarks)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Work until cancelled; results finished by then are recorded before returning."""
        workers = [asyncio.create_task(self._worker()) for _ in range(self._concurrency)]
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), timeout=self._batch_seconds)
                await self._flush()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await asyncio.shield(self._flush())

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            try:
                result = await self._work(key)
            except Exception:
                log.exception("%s work failed key=%r", self.name, key)
                self._claimed.discard(key)
                continue
            self._done.append((key, result))
            if len(self._done) >= self._batch_size:
                self._full.set()

    async def _flush(self) -> None:
        self._full.clear()
        if not self._done:
            return
        done, self._done = self._done, []
        try:
            await self._record([result for _, result in done])
        except Exception:
            log.exception("%s results could not be recorded; kept for the next flush count=%d", self.name, len(done))
            self._done = done + self._done
            return
        for key, _ in done:
            self._claimed.discard(key)
        if not self._claimed:
            self._idle.set()
