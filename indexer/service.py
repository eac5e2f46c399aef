"""The indexer as one long-running object: consumer → writer, with audio checks and handle lookups
running beside it. `serve` runs it next to the API; `index` and `replay` run it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable

import httpx

from indexer import metrics
from indexer.audio_check import AudioChecker, AudioResult
from indexer.changes import Batch, Planner
from indexer.config import Settings
from indexer.consumer import Consumer
from indexer.events import Commit, Event
from indexer.identity import IdentityResolver
from indexer.netguard import GuardedBackend, GuardedTransport
from indexer.runtime import tune_for_ingest
from indexer.store import Store
from indexer.workqueue import WorkQueue
from indexer.writer import Writer

log = logging.getLogger(__name__)


class Indexer:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        replay_from: int | None = None,
        checker: AudioChecker | None = None,
        identity: IdentityResolver | None = None,
    ) -> None:
        """`replay_from` rewinds the stored cursor and starts exactly there; otherwise the indexer resumes
        a few seconds before the stored cursor, as on any reconnect."""
        self.settings = settings
        self.store = store
        if replay_from is not None:
            store.rewind(replay_from, "replay")
        tune_for_ingest()
        self.writer = Writer(store)
        self._max_future_us = int(settings.future_skew_seconds * 1_000_000)
        self.planner = Planner(store.known_dids(), self._max_future_us)
        self._checker = checker
        self._identity = identity
        stored = store.cursor()
        self.consumer = Consumer(
            settings, self._emit, stored.time_us if stored else None, rewind_first=replay_from is None
        )
        self.audio: WorkQueue[str, AudioResult] | None = None
        self.handles: WorkQueue[str, tuple[str, str | None] | None] | None = None

    def stop(self) -> None:
        self.consumer.stop()

    def status(self) -> dict[str, object]:
        """For /xrpc/_health: where the indexer reads from and how much work it has in hand."""
        return {
            "jetstream": self.consumer.connected_to,
            "cursor": self.consumer.cursor,
            "audioChecksOutstanding": self.audio.outstanding if self.audio else 0,
            "handleLookupsOutstanding": self.handles.outstanding if self.handles else 0,
        }

    async def run(self) -> None:
        """Index until stop(); then flush the batch in hand and the finished checks, and return."""
        async with contextlib.AsyncExitStack() as stack:
            checker = self._checker or await stack.enter_async_context(AudioChecker(self.settings))
            identity = self._identity or await self._default_identity(stack)
            self.audio = WorkQueue(
                "audio", checker.check, self.writer.record_audio, concurrency=self.settings.audio_concurrency
            )
            self.handles = WorkQueue("handles", identity.lookup_handle, self._record_handles, concurrency=4)
            self.audio.submit(self.store.pending_urls())
            self.handles.submit(self.store.unresolved_dids())
            workers = [asyncio.create_task(self.audio.run()), asyncio.create_task(self.handles.run())]
            try:
                await self.consumer.run()
            finally:
                for worker in workers:
                    worker.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                self.writer.close()
        log.info("indexer stopped cursor=%s", self.consumer.cursor)

    async def ingest_local(self, commit: Commit, audio: AudioResult | None, handle: str | None) -> None:
        """Index a record this process just wrote to its author's PDS, as its Jetstream copy will be
        (same rev: that copy is then a no-op). `audio` is a check to record first; `handle` is the DID
        document's, for an account seen here for the first time."""
        if audio is not None:
            await self.writer.record_audio([audio])
        batch = self.planner.plan([commit])
        batch.cursor = None  # not a Jetstream event: the stream's cursor must not move
        await self._commit(batch, None)
        if handle is not None and batch.new_accounts:
            await self.writer.set_handles({did: handle for did in batch.new_accounts})

    async def _default_identity(self, stack: contextlib.AsyncExitStack) -> IdentityResolver:
        timeout = httpx.Timeout(self.settings.audio_timeout_seconds)
        plc = await stack.enter_async_context(httpx.AsyncClient(timeout=timeout))
        # did:web names its own host, so its document is fetched with the SSRF guard, like audio.
        backend = GuardedBackend(allow_loopback=self.settings.audio_allow_insecure)
        web = await stack.enter_async_context(
            httpx.AsyncClient(transport=GuardedTransport(backend, max_connections=8), timeout=timeout, trust_env=False)
        )
        return IdentityResolver(self.settings.plc_url, plc, web)

    def _emit(self, events: list[Event], source: str) -> Awaitable[None]:
        """Plan now, on the event loop (overlapping the previous commit); commit when awaited."""
        for kind, n in Counter(map(type, events)).items():
            metrics.EVENTS_RECEIVED.labels(kind=kind.__name__.lower()).inc(n)
        return self._commit(self.planner.plan(events), source)

    async def _commit(self, batch: Batch, source: str) -> None:
        try:
            pending = await self.writer.apply(batch, source)
        except Exception:
            # Rolled back: forget the accounts the planner learned from batches that were not stored.
            self.planner = Planner(self.store.known_dids(), self._max_future_us)
            raise
        if pending and self.audio is not None:
            self.audio.submit(pending)
        if batch.identities and self.handles is not None:
            self.handles.submit(batch.identities)
        if batch.cursor is not None:
            metrics.INDEXER_LAG.set(max(time.time() - batch.cursor / 1_000_000, 0.0))

    async def _record_handles(self, results: list[tuple[str, str | None] | None]) -> None:
        handles = dict(result for result in results if result is not None)
        if handles:
            await self.writer.set_handles(handles)
