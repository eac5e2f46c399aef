"""The network's history: every account's repository, synced from its own PDS, beside the stream.

Jetstream keeps about a day. The accounts that hold tracks are found by asking relays
(`com.atproto.sync.listReposByCollection`, paged, the cursor kept in the store), and by the stream itself
(an account first seen there is synced too: its earlier tracks predate our cursor). Each account's sync is
a small durable state machine in the store (`account_syncs`): pending → syncing → synced at a rev, or
failed with its reason and the time of the next try (1 minute doubling to an hour), or inactive when the
PDS refuses the repository as taken down, suspended or deactivated (asked again once the stream says the
account is active).

The cut-over needs no buffer: a repository's records are applied at its rev through the tracks' one upsert,
which writes a row only over an older rev, and records it no longer holds become tombstones only where the
index's row is older than that rev. A live event newer than the repository wins whichever commits first;
nothing older overwrites what the repository proved (`indexer/db/sync_sql.py`).

`decide` is the sans-I/O core (a repository's answer → the rows and the sync's state); `Backfiller` is the
shell: the discovery loop, the workers, and the writes, all through the index's one writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from indexer import metrics
from indexer.atproto import tid
from indexer.atproto.nsid import TRACK_COLLECTION
from indexer.atproto.records import validate_track
from indexer.atproto.syntax import is_did
from indexer.atproto.uri import record_uri
from indexer.config import BackfillSettings, Settings
from indexer.db.batch import FAILED, INACTIVE, SYNCED, DiscoveryPage, Rejection, SyncBatch, SyncResult
from indexer.db.rows import DiscoveryRun, SyncClaim
from indexer.db.store import now_us
from indexer.errors import InvalidRecord, StoreError
from indexer.ingest.planner import PROVEN, TrackChange, track_table
from indexer.net.outbound import Outbound
from indexer.net.repos import Fetched, Refused, RepoAnswer, RepoFetcher, Unreachable

log = logging.getLogger(__name__)

RETRY_MAX_SECONDS = 3600.0
PAGE_LIMIT = 2000  # listReposByCollection's most
MAX_PAGE_BYTES = 4 * 1024 * 1024
FLUSH_SECONDS = 0.2  # finished syncs wait this long for company in one transaction
IDLE_SECONDS = 1.0  # how often the queue is looked at when nothing wakes the workers


@dataclass(slots=True)
class Decided:
    result: SyncResult
    changes: list[TrackChange] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def decide(
    claim: SyncClaim,
    answer: RepoAnswer,
    *,
    started_us: int,
    known: bool,
    max_future_us: int,
    retry_seconds: float,
    now: int | None = None,
) -> Decided:
    """What a repository's answer changes: each track it holds as a proven row at its rev (a record that
    breaks the lexicon: a rejection and a tombstone, as a live create that failed its proof), and the sync's
    state. `known`: the index follows the account already (else it is added, if it holds a track)."""
    now = now_us() if now is None else now
    did = claim.did
    if isinstance(answer, Refused):
        return Decided(SyncResult(did, INACTIVE, answer.reason, status=answer.status, at_us=started_us))
    if isinstance(answer, Unreachable):
        attempts = claim.attempts + 1
        wait = max(min(retry_seconds * 2 ** (attempts - 1), RETRY_MAX_SECONDS), answer.retry_after)
        next_us = now + int(wait * 1_000_000)
        return Decided(SyncResult(did, FAILED, answer.reason[:300], attempts=attempts, next_us=next_us))
    repo = answer.repo
    decided = Decided(SyncResult(did, SYNCED, None, rev=repo.rev, at_us=started_us))
    tracks = 0
    for record in repo.records:
        if not tid.is_tid(record.rkey):  # tracks are keyed by TID: the stream refuses any other key too
            decided.rejections.append(
                _rejection(did, record.rkey, repo.rev, f"rkey: {record.rkey[:64]!r} is not a TID", now)
            )
            continue
        try:
            if record.record is None:
                raise InvalidRecord(f"record: not a {TRACK_COLLECTION}")
            track = validate_track(record.record, record.rkey, now, max_future_us)
        except InvalidRecord as exc:
            decided.rejections.append(_rejection(did, record.rkey, repo.rev, exc.reason, now))
            decided.changes.append(TrackChange(did, record.rkey, repo.rev, None, None, now, now, PROVEN))
            continue
        decided.changes.append(TrackChange(did, record.rkey, repo.rev, record.cid, track, now, now, PROVEN))
        tracks += 1
    decided.result.records = tracks
    if not known and tracks:
        decided.result.since_us = started_us
    return decided


def _rejection(did: str, rkey: str, rev: str, reason: str, now: int) -> Rejection:
    return Rejection(record_uri(did, rkey)[:300], rev, f"repository: {reason}"[:300], now)


def batch_of(decided: list[Decided]) -> SyncBatch:
    changes = [change for d in decided for change in d.changes]
    return SyncBatch(
        results=[d.result for d in decided],
        tracks=track_table(changes) if changes else None,
        rejections=[r for d in decided for r in d.rejections],
    )


def page_of(relay: str, started_us: int, body: object) -> DiscoveryPage:
    """A listReposByCollection answer, checked: `{repos: [{did}], cursor?}`."""
    if not isinstance(body, dict) or not isinstance(body.get("repos"), list):
        raise ValueError("not a listReposByCollection answer")
    dids = [repo["did"] for repo in body["repos"] if isinstance(repo, dict) and isinstance(repo.get("did"), str)]
    cursor = body.get("cursor")
    return DiscoveryPage(
        relay,
        started_us,
        [d for d in dids if is_did(d)],  # a relay is a stranger too
        cursor if isinstance(cursor, str) and cursor else None,
    )


class Backfiller:
    """Runs discovery and the sync workers until cancelled. `writer` is the index's one Writer;
    `known(did)` says whether the index follows an account; `on_synced(new_accounts, audio_urls)` hands the
    indexer what a sync brought (accounts to follow and resolve, audio to check)."""

    def __init__(
        self,
        settings: BackfillSettings,
        writer: SyncWriter,
        fetcher: RepoFetcher,
        *,
        known: Callable[[str], bool],
        on_synced: Callable[[dict[str, int], list[str]], None],
        max_future_us: int,
        relay_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self._writer = writer
        self._fetcher = fetcher
        self._known = known
        self._on_synced = on_synced
        self._max_future_us = max_future_us
        self._relays = relay_client
        self._wake = asyncio.Event()
        self._discover = asyncio.Event()
        self._done: asyncio.Queue[Decided] = asyncio.Queue()
        self._in_hand: set[str] = set()
        self.discovering: str | None = None

    def wake(self, *, discover: bool = False) -> None:
        """Look for due syncs now (and list the relays again, when `discover`)."""
        self._wake.set()
        if discover:
            self._discover.set()

    @property
    def in_hand(self) -> int:
        return len(self._in_hand)

    async def run(self, *, discover: bool = True) -> None:
        """Until cancelled; `discover`: list the relays too (first at once, then every interval)."""
        reset = await self._writer.reset_syncs()
        if reset:
            log.info("backfill resumes syncs left unfinished accounts=%d", reset)
        tasks = [asyncio.create_task(self._sync_loop()), asyncio.create_task(self._flush_loop())]
        if self.settings.urls and discover:
            tasks.append(asyncio.create_task(self._discovery_loop()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- syncs -----------------------------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        room = self.settings.concurrency * 2  # a few in hand beyond the fetch slots: the next starts at once
        workers: set[asyncio.Task[None]] = set()
        try:
            while True:
                self._wake.clear()
                free = room - len(workers)
                claims: list[SyncClaim] = []
                if free > 0:
                    try:
                        claims = await self._writer.claim_syncs(now_us(), free)
                    except StoreError as exc:
                        log.warning("backfill cannot claim syncs reason=%s", exc.reason)
                for claim in claims:
                    self._in_hand.add(claim.did)
                    task = asyncio.create_task(self._sync(claim))
                    workers.add(task)
                    task.add_done_callback(workers.discard)
                if len(claims) < free or free <= 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), IDLE_SECONDS)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _sync(self, claim: SyncClaim) -> None:
        started = now_us()
        try:
            answer = await self._fetcher.fetch(claim.did)
        except Exception as exc:  # a bug must not stall the account forever: it fails, and is tried again
            log.exception("backfill sync crashed did=%s", claim.did)
            answer = Unreachable(f"internal error: {type(exc).__name__}")
        decided = decide(
            claim,
            answer,
            started_us=started,
            known=self._known(claim.did),
            max_future_us=self._max_future_us,
            retry_seconds=self.settings.retry_seconds,
        )
        result = decided.result
        if result.state == SYNCED:
            assert isinstance(answer, Fetched)
            log.info("repo synced did=%s rev=%s tracks=%d bytes=%d", claim.did, result.rev, result.records, answer.size)
        else:
            log.warning("repo not synced did=%s state=%s reason=%s", claim.did, result.state, result.reason)
        await self._done.put(decided)
        self._wake.set()  # a worker's room is free: the next account can start while this one is written

    async def _flush_loop(self) -> None:
        while True:
            decided = [await self._done.get()]
            await asyncio.sleep(FLUSH_SECONDS)
            while not self._done.empty() and len(decided) < 256:
                decided.append(self._done.get_nowait())
            await self._commit(decided)

    async def _commit(self, decided: list[Decided]) -> None:
        batch = batch_of(decided)
        for attempt in range(1_000_000):
            try:
                pending = await self._writer.apply_syncs(batch)
                break
            except StoreError as exc:  # the database is away: these syncs are kept in hand until it is back
                log.error("backfill cannot store syncs accounts=%d reason=%s", len(decided), exc.reason)
                await asyncio.sleep(min(30.0, 2.0**attempt))
        for d in decided:
            self._in_hand.discard(d.result.did)
            metrics.SYNCS.labels(outcome=d.result.state).inc()
            metrics.SYNCED_RECORDS.inc(d.result.records)
        new = {d.result.did: d.result.since_us for d in decided if d.result.since_us is not None}
        self._on_synced(new, pending)
        self._wake.set()

    # -- discovery -------------------------------------------------------------------------------------

    async def _discovery_loop(self) -> None:
        interval_us = int(self.settings.discovery_interval_seconds * 1_000_000)
        failures = 0
        while True:
            self._discover.clear()
            ok = True
            for relay in self.settings.urls:
                try:
                    await self._discover_relay(relay, interval_us)
                except (httpx.HTTPError, ValueError, StoreError) as exc:
                    reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
                    log.warning("discovery failed relay=%s reason=%s", relay, str(reason)[:300])
                    ok = False
                finally:
                    self.discovering = None
            failures = 0 if ok else failures + 1
            wait = min(self.settings.discovery_interval_seconds, 60.0)
            if failures:
                wait = min(wait, random.uniform(0.5, 1.0) * min(300.0, 2.0**failures))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._discover.wait(), wait)

    async def discover(self) -> None:
        """List every relay now, from where its listing stands (for a one-off run)."""
        for relay in self.settings.urls:
            await self._discover_relay(relay, 0)

    async def _discover_relay(self, relay: str, interval_us: int) -> None:
        runs = {run.relay: run for run in await self._writer.discovery_runs()}
        run = runs.get(relay)
        now = now_us()
        if run is not None and run.finished_us is not None and run.finished_us + interval_us > now:
            return  # listed recently: not due
        resuming = run is not None and run.finished_us is None
        started = run.started_us if resuming and run is not None else now
        cursor = run.cursor if resuming and run is not None else None
        self.discovering = relay
        log.info("discovery started relay=%s cursor=%s", relay, cursor)
        listed = 0
        client = self._relays
        assert client is not None
        while True:
            params: dict[str, str | int] = {"collection": TRACK_COLLECTION, "limit": PAGE_LIMIT}
            if cursor:
                params["cursor"] = cursor
            response = await client.get(
                f"{relay.rstrip('/')}/xrpc/com.atproto.sync.listReposByCollection", params=params
            )
            if response.status_code != 200:
                raise ValueError(f"the relay answered {response.status_code}")
            if len(response.content) > MAX_PAGE_BYTES:
                raise ValueError("the relay's page is over 4 MiB")
            page = page_of(relay, started, response.json())
            if not page.dids:
                page.cursor = None  # an empty page ends the listing, whatever cursor it names
            await self._writer.record_discovery(page)
            listed += len(page.dids)
            self._wake.set()
            if page.cursor is None:
                break
            cursor = page.cursor
        log.info("discovery finished relay=%s accounts=%d", relay, listed)


class SyncWriter(Protocol):
    """What the backfill needs of the index's writer (`indexer.db.writer.Writer` has it)."""

    async def reset_syncs(self) -> int: ...
    async def claim_syncs(self, now_us: int, limit: int) -> list[SyncClaim]: ...
    async def apply_syncs(self, batch: SyncBatch) -> list[str]: ...
    async def record_discovery(self, page: DiscoveryPage) -> None: ...
    async def discovery_runs(self) -> list[DiscoveryRun]: ...
    async def request_syncs(self, dids: list[str] | None, reason: str) -> int: ...


async def sync_once(
    settings: Settings, writer: SyncWriter, known: dict[str, int], dids: list[str] | None, done: asyncio.Event
) -> None:
    """A one-off backfill with no service running (`relay-appview backfill` while nothing serves): ask for
    these accounts (None: every account, after listing every relay again) and sync until `done` is set (the
    caller watches the progress). Audio is checked by the service once it runs (it asks for every pending URL
    at start)."""
    outbound = Outbound(settings)
    relays = httpx.AsyncClient(timeout=httpx.Timeout(60.0), trust_env=False)
    try:
        insecure = settings.net.allow_insecure
        fetcher = RepoFetcher(settings.backfill, outbound.identity, outbound.web, allow_insecure=insecure)
        backfiller = Backfiller(
            settings.backfill,
            writer,
            fetcher,
            known=lambda did: did in known,
            on_synced=lambda new, _: known.update(new),
            max_future_us=settings.ingest.max_future_us,
            relay_client=relays,
        )
        await writer.request_syncs(dids, "asked for by an operator")
        if dids is None:
            await backfiller.discover()
        running = asyncio.create_task(backfiller.run(discover=False))
        await done.wait()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    finally:
        await relays.aclose()
        await outbound.aclose()
