"""The single writer: every change to the index runs on one thread, in order.

DuckDB takes one writer; giving it its own thread also keeps the event loop receiving while a batch is
planned and committed (DuckDB releases the GIL while it works). The planner lives here too, so the set of
known accounts is only ever touched by the thread that commits it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from indexer import metrics
from indexer.changes import Batch, Planner
from indexer.events import Event
from indexer.store import CheckResult, Store

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Applied:
    pending_urls: list[str]
    identities: set[str]
    cursor: int | None


class Writer:
    def __init__(self, store: Store, max_future_seconds: float = 86400.0) -> None:
        self.store = store
        self._max_future_us = int(max_future_seconds * 1_000_000)
        self._planner = Planner(store.known_dids(), self._max_future_us)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-writer")

    async def apply(self, events: list[Event], source: str | None) -> Applied:
        return await self._run(self._apply, events, source)

    async def record_audio(self, results: Iterable[CheckResult]) -> None:
        await self._run(self.store.record_audio, list(results))

    async def set_handles(self, handles: dict[str, str | None]) -> None:
        await self._run(self.store.set_handles, handles)

    async def rewind(self, time_us: int, source: str | None) -> None:
        await self._run(self.store.rewind, time_us, source)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _apply(self, events: list[Event], source: str | None) -> Applied:
        batch = self._planner.plan(events)
        try:
            pending = self.store.apply(batch, source)
        except Exception:
            # Rolled back: forget accounts the planner learned from this batch, they were not stored.
            self._planner = Planner(self.store.known_dids(), self._max_future_us)
            raise
        _count(batch)
        return Applied(pending, batch.identities, batch.cursor)


def _count(batch: Batch) -> None:
    for kind, n in batch.counts.items():
        if kind == "rejected":
            continue
        metrics.EVENTS_APPLIED.labels(kind=kind).inc(n)
    if batch.rejections:
        metrics.REJECTIONS.labels(reason="invalid_record").inc(len(batch.rejections))
        for rejection in batch.rejections:
            log.info("record rejected uri=%s rev=%s reason=%s", rejection.uri, rejection.rev, rejection.reason)
