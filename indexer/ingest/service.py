"""The indexer as one long-running object: a feed process (Jetstream → planned batches) → the index's
writer, with the work each change brings running beside it: proofs of records by their PDS, audio checks,
handle lookups, and the slow recheck of audio that answered (link rot). `serve` runs it next to the API;
`index` and `replay` run it alone.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

import httpx
import pyarrow.compute as pc

from indexer import metrics
from indexer.config import Settings
from indexer.db.batch import Batch
from indexer.db.rows import AudioResult, ProofJob
from indexer.db.store import now_us
from indexer.errors import StoreError
from indexer.ingest.backfill import Backfiller
from indexer.ingest.feed import Ack, Feed, Start
from indexer.ingest.index import Index
from indexer.ingest.planner import PENDING
from indexer.ingest.proofs import outcomes
from indexer.ingest.workqueue import WorkQueue
from indexer.net.audio_check import AudioChecker
from indexer.net.outbound import Outbound
from indexer.net.prover import ProofResult, Prover
from indexer.net.repos import RepoFetcher
from indexer.runtime import tune_for_ingest

PROOF_SWEEP_SECONDS = 30.0  # how often proofs that had to wait are looked for
BACKFILL_AUDIO_SECONDS = 0.1  # how often audio of synced tracks is handed to the checks
BACKFILL_AUDIO_IN_FLIGHT = 4  # checks of synced tracks' audio at a time while syncs are in hand

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
        outbound: Outbound | None = None,
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
        self._outbound = outbound
        stored = index.cursor()
        self.cursor = stored.time_us if stored else None
        self._feed: Feed | None = None
        self._stopping = asyncio.Event()
        self.audio: WorkQueue[str, AudioResult] | None = None
        self.handles: WorkQueue[str, tuple[str, str | None] | None] | None = None
        self.proofs: WorkQueue[ProofJob, ProofResult] | None = None
        self._proof_misses: dict[ProofJob, int] = {}  # jobs whose PDS could not answer, and how often
        self.standby = False  # another indexer holds the writer lock: this one waits to take over
        self._lost_lead = False
        self._unreachable = False
        self.backfill: Backfiller | None = None
        self._synced_audio: collections.deque[str] = collections.deque()  # from syncs, not yet handed over
        self.window_gap: dict[str, object] | None = None  # the last gap this process saw in the stream

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
            "proofsOutstanding": self.proofs.outstanding if self.proofs else 0,
            "syncsInHand": self.backfill.in_hand if self.backfill else 0,
            "discovering": self.backfill.discovering if self.backfill else None,
            "windowGap": self.window_gap,
        }

    async def replay(self, time_us: int) -> None:
        """Rewind the running indexer to `time_us` (an operator's `replay`): the feed stops, and the next one
        starts exactly there once the batches it had in hand are committed (they would move the cursor on)."""
        self._replay_from = time_us
        if self._feed is not None:
            self._feed.stop()

    async def request_backfill(self, dids: list[str] | None) -> int:
        """Sync these accounts again now (None: every account, and every relay's listing from its start)."""
        reason = "asked for by an operator"
        asked = await self.index.writer.request_syncs(dids, reason)
        if self.backfill is not None:
            self.backfill.wake(discover=dids is None)
        return asked

    async def run(self) -> None:
        """Index until stop(); then flush the batch in hand and the finished work, and return."""
        if not await self._take_lead():
            return
        async with contextlib.AsyncExitStack() as stack:
            outbound = self._outbound
            if outbound is None:
                outbound = Outbound(self.settings)
                stack.push_async_callback(outbound.aclose)
            checker = self._checker
            if checker is None:
                checker = AudioChecker(self.settings.audio, self.settings.net, resolver=outbound.dns)
                await stack.enter_async_context(checker)
            prover = Prover(
                self.settings.proofs, outbound.identity, outbound.web, allow_insecure=self.settings.net.allow_insecure
            )
            writer, store = self.index.writer, self.index.store
            audio_concurrency = self.settings.audio.concurrency
            self.audio = WorkQueue("audio", checker.check, writer.record_audio, concurrency=audio_concurrency)
            self.handles = WorkQueue("handles", outbound.identity.lookup_handle, self._record_handles, concurrency=4)
            self.proofs = WorkQueue(
                "proofs", prover.prove, self._record_proofs, concurrency=self.settings.proofs.concurrency
            )
            self.audio.submit(await asyncio.to_thread(store.pending_urls))
            self.handles.submit(await asyncio.to_thread(store.unresolved_dids))
            workers = [
                asyncio.create_task(queue.run()) for queue in (self.audio, self.handles, self.proofs)
            ] + [
                asyncio.create_task(task)
                for task in (self._sweep_proofs(), self._recheck_audio(), self._recheck_handles())
            ]
            if self.settings.backfill.enabled:
                relays = httpx.AsyncClient(timeout=httpx.Timeout(60.0), trust_env=False)  # the operator's choice
                stack.push_async_callback(relays.aclose)
                insecure = self.settings.net.allow_insecure
                fetcher = RepoFetcher(self.settings.backfill, outbound.identity, outbound.web, allow_insecure=insecure)
                self.backfill = Backfiller(
                    self.settings.backfill,
                    writer,
                    fetcher,
                    known=lambda did: did in self.index.planner.known,
                    on_synced=self._synced,
                    max_future_us=self.settings.ingest.max_future_us,
                    relay_client=relays,
                )
                workers += [asyncio.create_task(self.backfill.run()), asyncio.create_task(self._backfill_audio())]
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
            if self._replay_from is not None:
                await self.index.writer.rewind_to(self._replay_from, "replay")
                log.warning("replaying from cursor=%d", self._replay_from)
                self.cursor, self._replay_from, self._rewind_first = self._replay_from, None, False
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
            if self._replay_from is not None:
                continue  # stopped for a replay: start again at once, from the replay's cursor
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

    async def _commit(self, batch: Batch, source: str | None) -> None:
        pending = await self.index.commit(batch, source)
        if batch.gap is not None:
            gap = batch.gap
            metrics.WINDOW_GAPS.inc()
            self.window_gap = {"askedCursor": gap.asked_us, "firstEvent": gap.first_us, "source": gap.source}
            log.error(
                "the stream skipped events it no longer holds asked=%d first=%d source=%s: syncing every account "
                "again and listing every relay again", gap.asked_us, gap.first_us, gap.source,
            )
        if self.backfill is not None and (batch.new_accounts or batch.gap is not None):
            self.backfill.wake(discover=batch.gap is not None)
        if pending and self.audio is not None:
            self.audio.submit(pending)
        if self.proofs is not None and (jobs := _proof_jobs(batch)):
            self.proofs.submit(await self.index.writer.unproven(jobs))
        if batch.identities and self.handles is not None:
            self.handles.submit(batch.identities)
        if batch.cursor is not None:
            self.cursor = batch.cursor if self.cursor is None else max(self.cursor, batch.cursor)
            metrics.INDEXER_LAG.set(max(time.time() - batch.cursor / 1_000_000, 0.0))

    def _synced(self, new_accounts: dict[str, int], pending: list[str]) -> None:
        """What finished syncs brought: audio to check (see `_backfill_audio`), and accounts now indexed to
        follow and resolve."""
        self._synced_audio.extend(pending)
        if new_accounts:
            self.index.planner.known.update(new_accounts)
            self._follow_accounts(new_accounts)
            if self.handles is not None:
                self.handles.submit(new_accounts)

    async def _backfill_audio(self) -> None:
        """Audio of synced tracks yields to the syncs: while repositories are in hand only a few checks run
        at a time (a backfill of thousands of tracks would otherwise spend the event loop on HEAD requests
        and hold the syncs back), and the rest once they are done. The URLs wait in the store as pending
        too, so a restart loses none."""
        while True:
            await asyncio.sleep(BACKFILL_AUDIO_SECONDS)
            if self.audio is None or self.backfill is None or not self._synced_audio:
                continue
            room = len(self._synced_audio)
            if self.backfill.in_hand:
                room = max(0, BACKFILL_AUDIO_IN_FLIGHT - self.audio.outstanding)
            self.audio.submit([self._synced_audio.popleft() for _ in range(min(room, len(self._synced_audio)))])

    async def _record_handles(self, results: list[tuple[str, str | None] | None]) -> None:
        handles = dict(result for result in results if result is not None)
        if handles:
            await self.index.writer.set_handles(handles)

    async def _record_proofs(self, results: list[ProofResult]) -> None:
        for result in results:
            if result.unreachable is not None:
                self._proof_misses[result.job] = self._proof_misses.get(result.job, 0) + 1
        settings = self.settings
        decided = outcomes(results, settings.ingest.max_future_us, self._proof_misses, settings.proofs.retry_seconds)
        pending = await self.index.writer.apply_proofs(decided)
        for result in results:
            if result.unreachable is None:
                self._proof_misses.pop(result.job, None)
            else:
                job = result.job
                log.info("proof unreachable did=%s rkey=%s reason=%s", job.did, job.rkey, result.unreachable)
        if pending and self.audio is not None:
            self.audio.submit(pending)

    async def _sweep_proofs(self) -> None:
        """Proofs still pending: at start, and then those whose wait (a PDS that could not answer) is over.
        The queue drops jobs it already holds, so asking again is harmless."""
        while True:
            try:
                jobs = await self.index.writer.due_proofs(now_us())
            except StoreError as exc:  # the database is away: the next round asks again
                log.warning("proof sweep failed reason=%s", exc.reason)
                jobs = []
            if self.proofs is not None:
                self.proofs.submit(jobs)
            await asyncio.sleep(min(PROOF_SWEEP_SECONDS, max(0.1, self.settings.proofs.retry_seconds / 2)))

    async def _recheck_audio(self) -> None:
        """Link rot: audio that answered (or did not) is asked again once its answer is older than
        RELAY_AUDIO_RECHECK_SECONDS: a file that starts answering 404 hides its tracks, one that comes back
        shows them again."""
        every, per_hour = self.settings.audio.recheck_seconds, self.settings.audio.rechecks_per_hour
        await _recheck("audio", lambda: self.audio, self.index.store.stale_audio, every, per_hour)

    async def _recheck_handles(self) -> None:
        """A verified handle is a claim about a domain, and domains change hands: handles are verified
        again (with a fresh DID document) once their answer is older than RELAY_HANDLE_RECHECK_SECONDS."""
        identity = self.settings.identity
        every, per_hour = identity.handle_recheck_seconds, identity.handle_rechecks_per_hour
        await _recheck("handle", lambda: self.handles, self.index.store.stale_handles, every, per_hour)


async def _recheck(
    name: str,
    queue: Callable[[], WorkQueue[str, Any] | None],
    stale: Callable[[int, int], list[str]],
    every_seconds: float,
    per_hour: int,
) -> None:
    """Answers older than `every_seconds` go back to their queue, a few at a time, at most `per_hour`."""
    interval = max(0.1, min(60.0, every_seconds / 4))
    per_round = max(1, math.ceil(per_hour * interval / 3600))
    while True:
        await asyncio.sleep(interval)
        work = queue()
        if per_hour <= 0 or work is None:
            continue
        before = now_us() - int(every_seconds * 1_000_000)
        try:
            work.submit(await asyncio.to_thread(stale, before, per_round))
        except StoreError as exc:
            log.warning("%s recheck failed reason=%s", name, exc.reason)


def _proof_jobs(batch: Batch) -> list[ProofJob]:
    """The batch's records that wait for their PDS: as the stream claimed them."""
    jobs: list[ProofJob] = []
    for segment in batch.segments:
        table = segment.tracks
        if table is None:
            continue
        waiting = table.filter(pc.equal(table["proof"], PENDING)).select(["did", "rkey", "rev", "cid"])
        jobs.extend(ProofJob(*row.values()) for row in waiting.to_pylist())
    return jobs
