"""The indexer as one long-running object: a feed process (Jetstream → planned batches) → the index's
writer, with audio checks and handle lookups running beside it. `serve` runs it next to the API; `index`
and `replay` run it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

import httpx

from indexer import metrics
from indexer.config import Settings
from indexer.db.batch import Batch
from indexer.db.rows import AudioResult
from indexer.errors import StoreError
from indexer.ingest.feed import Ack, Feed, Start
from indexer.ingest.index import Index
from indexer.ingest.workqueue import WorkQueue
from indexer.net.audio_check import AudioChecker
from indexer.net.identity import IdentityResolver
from indexer.net.netguard import GuardedBackend, GuardedTransport
from indexer.runtime import tune_for_ingest

log = logging.getLogger(__name__)

LEAD_POLL_SECONDS = 0.5  # how soon a standby takes over once the writer lock is free


class Indexer:
    def __init__(
        self,
        settings: Settings,
        index: Index,
        *,
        replay_from: int | None = None,
        checker: AudioChecker | None = None,
        identity: IdentityResolver | None = None,
    ) -> None:
        """`replay_from` rewinds the stored cursor and starts exactly there; otherwise the indexer resumes
        a few seconds before the stored cursor, as on any reconnect. Either happens once this process holds
        the writer lock (see `_take_lead`)."""
        self.settings = settings
        self.index = index
        self._replay_from = replay_from
        self._rewind_first = replay_from is None
        tune_for_ingest()
        index.on_new_accounts = self._follow_accounts
        self._checker = checker
        self._identity = identity
        stored = index.cursor()
        self.cursor = stored.time_us if stored else None
        self._feed: Feed | None = None
        self._stopping = asyncio.Event()
        self.audio: WorkQueue[str, AudioResult] | None = None
        self.handles: WorkQueue[str, tuple[str, str | None] | None] | None = None
        self.standby = False  # another indexer holds the writer lock: this one waits to take over
        self._lost_lead = False
        self._unreachable = False

    def stop(self) -> None:
        self._stopping.set()
        if self._feed is not None:
            self._feed.stop()

    def status(self) -> dict[str, object]:
        """For /xrpc/_health: where the indexer reads from and how much work it has in hand."""
        return {
            "standby": self.standby,
            "jetstream": self._feed.connected_to if self._feed else None,
            "cursor": self.cursor,
            "audioChecksOutstanding": self.audio.outstanding if self.audio else 0,
            "handleLookupsOutstanding": self.handles.outstanding if self.handles else 0,
        }

    async def run(self) -> None:
        """Index until stop(); then flush the batch in hand and the finished checks, and return."""
        if not await self._take_lead():
            return
        async with contextlib.AsyncExitStack() as stack:
            checker = self._checker
            if checker is None:
                checker = await stack.enter_async_context(AudioChecker(self.settings.audio, self.settings.net))
            identity = self._identity or await self._default_identity(stack)
            concurrency = self.settings.audio.concurrency
            self.audio = WorkQueue("audio", checker.check, self.index.writer.record_audio, concurrency=concurrency)
            self.handles = WorkQueue("handles", identity.lookup_handle, self._record_handles, concurrency=4)
            self.audio.submit(await asyncio.to_thread(self.index.store.pending_urls))
            self.handles.submit(await asyncio.to_thread(self.index.store.unresolved_dids))
            workers = [asyncio.create_task(self.audio.run()), asyncio.create_task(self.handles.run())]
            try:
                await self._follow()
            finally:
                for worker in workers:
                    worker.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
        log.info("indexer stopped cursor=%s", self.cursor)

    async def _follow(self) -> None:
        """Run feed processes until stop(): a feed that dies is started again, from the stored cursor."""
        failures = 0
        while not self._stopping.is_set():
            if self._lost_lead:
                if not await self._take_lead():
                    return
                self._lost_lead = False
            known = dict(self.index.planner.known)
            start = Start(self.settings, self.cursor, self._rewind_first, known, self.settings.ingest.max_future_us)
            self._rewind_first = True
            async with Feed(start) as feed:
                self._feed = feed
                if self._stopping.is_set():
                    feed.stop()
                committed = await self._write(feed)
            self._feed = None
            if self._stopping.is_set():
                return
            failures = 0 if committed else failures + 1
            delay = random.uniform(0.5, 1.0) * min(self.settings.ingest.backoff_max_seconds, 2.0**failures)
            log.error("feed process exited code=%s committed=%d restart_in=%.1fs", feed.exitcode, committed, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    async def _write(self, feed: Feed) -> int:
        """Commit the feed's batches in order, answering each; returns how many were committed."""
        committed = 0
        refused_through = -1  # a batch failed: refuse the rest of its connection (see indexer/feed.py)
        async for shipped in feed:
            if shipped.connection <= refused_through:
                feed.ack(Ack(committed=False))
                continue
            try:
                await self._commit(shipped.batch, shipped.source)
            except Exception as exc:
                if isinstance(exc, StoreError):  # expected (a full disk, say): its reason says it all
                    log.error("batch failed; the feed reconnects from cursor=%s reason=%s", self.cursor, exc.reason)
                else:
                    log.exception("batch failed; the feed reconnects from cursor=%s", self.cursor)
                refused_through = shipped.connection
                feed.ack(Ack(committed=False, known=dict(self.index.planner.known)))
                if not await self._still_leading():
                    log.warning("lost the writer lock to another indexer; standing by")
                    self._lost_lead = True
                    feed.stop()
                continue
            feed.ack(Ack(committed=True))
            committed += 1
        return committed

    async def _take_lead(self) -> bool:
        """Wait as a standby until this process holds the writer lock (False: stopped first); then plan
        from the accounts and index from the cursor the store holds, whoever wrote them."""
        while not await self._lead():
            if not self.standby:
                log.warning("standby: another indexer holds the writer lock; waiting to take over")
                self.standby = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=LEAD_POLL_SECONDS)
            if self._stopping.is_set():
                return False
        if self.standby:
            log.warning("took over the writer lock; indexing from the stored cursor")
            self.standby = False
        await self.index.reload_accounts()
        if self._replay_from is not None:
            await asyncio.to_thread(self.index.writer.rewind, self._replay_from, "replay")
            self._replay_from = None
        stored = await asyncio.to_thread(self.index.cursor)
        self.cursor = stored.time_us if stored else None
        return True

    async def _lead(self) -> bool:
        try:
            leading = await self.index.lead()
        except StoreError as exc:
            if not self._unreachable:  # once an outage, not every poll
                log.error("cannot reach the database for the writer lock reason=%s", exc.reason)
            self._unreachable = True
            return False
        self._unreachable = False
        return leading

    async def _still_leading(self) -> bool:
        """After a failed batch: False once another indexer holds the lock. A database that cannot be
        reached says nothing either way: the feed goes on, and a batch is written again only under the lock."""
        try:
            return await self.index.lead()
        except StoreError:
            return True

    def _follow_accounts(self, dids: dict[str, int]) -> None:
        """Accounts indexed outside the feed (publishing), whose account events the feed must now follow."""
        if self._feed is not None:
            self._feed.add_known(dids)

    async def _default_identity(self, stack: contextlib.AsyncExitStack) -> IdentityResolver:
        timeout = httpx.Timeout(self.settings.identity.timeout_seconds)
        plc = await stack.enter_async_context(httpx.AsyncClient(timeout=timeout, trust_env=False))
        # did:web names its own host, so its document is fetched with the SSRF guard, like audio.
        backend = GuardedBackend(allow_loopback=self.settings.net.allow_insecure)
        web = await stack.enter_async_context(
            httpx.AsyncClient(transport=GuardedTransport(backend, max_connections=8), timeout=timeout, trust_env=False)
        )
        return IdentityResolver(self.settings.identity.plc_url, plc, web)

    async def _commit(self, batch: Batch, source: str | None) -> None:
        pending = await self.index.commit(batch, source)
        if pending and self.audio is not None:
            self.audio.submit(pending)
        if batch.identities and self.handles is not None:
            self.handles.submit(batch.identities)
        if batch.cursor is not None:
            self.cursor = batch.cursor if self.cursor is None else max(self.cursor, batch.cursor)
            metrics.INDEXER_LAG.set(max(time.time() - batch.cursor / 1_000_000, 0.0))

    async def _record_handles(self, results: list[tuple[str, str | None] | None]) -> None:
        handles = dict(result for result in results if result is not None)
        if handles:
            await self.index.writer.set_handles(handles)
