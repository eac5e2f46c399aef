"""The single writer: every change to the index runs on one thread, in order.

Jetstream batches, local publishes, audio verdicts, handles, the cursor and the cursor secret all come
through here. DuckDB takes one writer, and it releases the GIL while it works: with commits on their own
thread, the event loop stays free for the API, the audio checks and the feed process's next batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from indexer import metrics
from indexer.db.batch import Batch, DiscoveryPage, ProofOutcomes, SyncBatch
from indexer.db.rows import AudioResult, DiscoveryRun, ProofJob, SyncClaim
from indexer.db.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")


class Writer:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-writer")
        self._failing_since: float | None = None  # monotonic time of the first failure since the last success
        self._failure = ""

    def failing(self) -> tuple[float, str] | None:
        """(seconds, reason) while every write since the first failure has failed (a full disk, say)."""
        if self._failing_since is None:
            return None
        return time.monotonic() - self._failing_since, self._failure

    async def lead(self) -> bool:
        """Hold the indexer's writer lock, taking it if it is free (see Store.lead)."""
        return await self._run(self.store.lead)

    async def apply(self, batch: Batch, source: str | None) -> list[str]:
        """Commit a planned batch with its cursor; returns the audio URLs that now need a check."""
        pending = await self._run(self.store.apply, batch, source)
        _count(batch)
        return pending

    async def apply_proofs(self, outcomes: ProofOutcomes) -> list[str]:
        pending = await self._run(self.store.apply_proofs, outcomes)
        for outcome, n in outcomes.counts.items():
            metrics.PROOFS.labels(outcome=outcome).inc(n)
        return pending

    async def unproven(self, jobs: list[ProofJob]) -> list[ProofJob]:
        """Read here, in order with the writes: a proof whose verdict commits after this read is still
        claimed by its queue when the answer arrives, so it is never asked twice."""
        return await self._run(self.store.unproven, jobs)

    async def due_proofs(self, now_us: int) -> list[ProofJob]:
        """Store.pending_proofs, in order with the writes (see unproven)."""
        return await self._run(self.store.pending_proofs, now_us)

    # -- repository syncs (see indexer/ingest/backfill.py) ----------------------------------------------

    async def reset_syncs(self) -> int:
        return await self._run(self.store.reset_syncs)

    async def claim_syncs(self, now_us: int, limit: int) -> list[SyncClaim]:
        return await self._run(self.store.claim_syncs, now_us, limit)

    async def apply_syncs(self, batch: SyncBatch) -> list[str]:
        return await self._run(self.store.apply_syncs, batch)

    async def record_discovery(self, page: DiscoveryPage) -> None:
        await self._run(self.store.record_discovery, page)

    async def request_syncs(self, dids: list[str] | None, reason: str) -> int:
        return await self._run(self.store.request_syncs, dids, reason)

    async def discovery_runs(self) -> list[DiscoveryRun]:
        """Read here, in order with the writes: a page just recorded is seen."""
        return await self._run(self.store.discovery_runs)

    async def rewind_to(self, time_us: int, source: str | None) -> None:
        await self._run(self.store.rewind, time_us, source)

    async def record_audio(self, results: Iterable[AudioResult]) -> None:
        await self._run(self.store.record_audio, list(results))

    async def record_upload(self, did: str, key: str, size: int) -> None:
        await self._run(self.store.record_upload, did, key, size)

    async def set_handles(self, handles: Mapping[str, str | None]) -> None:
        await self._run(self.store.set_handles, dict(handles))

    async def save_oauth_session(self, key: str, did: str, sealed: bytes) -> None:
        await self._run(self.store.save_oauth_session, key, did, sealed)

    async def delete_oauth_session(self, key: str) -> None:
        await self._run(self.store.delete_oauth_session, key)

    async def save_oauth_request(self, key: str, sealed: bytes, expires_us: int) -> None:
        await self._run(self.store.save_oauth_request, key, sealed, expires_us)

    async def take_oauth_request(self, key: str, now_us: int) -> bytes | None:
        return await self._run(self.store.take_oauth_request, key, now_us)

    async def purge_oauth(self, now_us: int, idle_before_us: int) -> None:
        await self._run(self.store.purge_oauth, now_us, idle_before_us)

    def rewind(self, time_us: int, source: str | None) -> None:
        """Blocks: for start-up, before the event loop has work."""
        self._pool.submit(self.store.rewind, time_us, source).result()

    def set_meta(self, key: str, value: str) -> None:
        """Blocks: for start-up, before the event loop has work."""
        self._pool.submit(self.store.set_meta, key, value).result()

    def keep_meta(self, key: str, value: str, replace: str | None) -> str:
        """Blocks: for start-up, before the event loop has work."""
        return self._pool.submit(self.store.keep_meta, key, value, replace).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except Exception as exc:
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            self._failure = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            raise
        self._failing_since = None
        return result


def _count(batch: Batch) -> None:
    for kind, n in batch.counts.items():
        if kind != "rejected":
            metrics.EVENTS_APPLIED.labels(kind=kind).inc(n)
    if batch.rejections:
        metrics.REJECTIONS.labels(reason="invalid_record").inc(len(batch.rejections))
        for rejection in batch.rejections:
            log.info("record rejected uri=%s rev=%s reason=%s", rejection.uri, rejection.rev, rejection.reason)
