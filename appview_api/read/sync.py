"""Keeps the catalog current with the store it mirrors.

Every commit that changes what readers see bumps the index's `generation`. A request first awaits `current()`,
which returns once the catalog holds every commit made before the request arrived, so a client reads its
own writes and a delete or takedown is gone from the next response. Catching up reads only the rows
stamped since the last look, on a pool thread (DuckDB releases the GIL), then applies them on the event
loop in slices, so requests keep flowing during a large catch-up. Concurrent requests share one catch-up.
A follower task also catches up a few times a second, so work does not pile up between requests, and
probes the database, so reads stop (503) rather than serve a catalog that can no longer learn of takedowns.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from appview_api.read.catalog import Catalog
from indexer.db.rows import AccountRow, TrackRow
from indexer.errors import StoreError, StoreUnavailable
from indexer.ingest.index import Index

log = logging.getLogger(__name__)

FOLLOW_SECONDS = 0.2
SLICE = 1_000  # rows applied to the catalog between two turns of the event loop (~10 ms)

Changes = tuple[list[AccountRow], list[list[TrackRow]]]


class Sync:
    def __init__(self, index: Index, catalog: Catalog, pool: ThreadPoolExecutor) -> None:
        self.index = index
        self.catalog = catalog
        self._pool = pool
        self._seen = -1  # the store generation the catalog reflects
        self._running: asyncio.Future[None] | None = None
        self.failure: StoreUnavailable | None = None  # the database is unreachable: refuse reads

    def load(self) -> None:
        """Fill the catalog from scratch (startup; blocks: ~1M tracks take seconds)."""
        started = time.monotonic()
        generation = self.index.generation
        with self.index.catalog() as snapshot:  # the rows, and the stamps to resume from
            tracks_seen, accounts_seen = snapshot.stamps()
            self.catalog.apply_accounts(snapshot.accounts(None))
            for rows in snapshot.tracks(None):
                self.catalog.apply_tracks(rows)
        self.catalog.tracks_seen = max(self.catalog.tracks_seen, tracks_seen)
        self.catalog.accounts_seen = max(self.catalog.accounts_seen, accounts_seen)
        self._seen = generation
        # The catalog is a million long-lived objects: left in the collector's generations, every full
        # collection walks them all and stalls requests (search p99 ~97 ms at 1M tracks). Freeze them.
        gc.collect()
        gc.freeze()
        log.info("catalog loaded tracks=%d seconds=%.1f", len(self.catalog), time.monotonic() - started)

    async def current(self) -> None:
        """Return once the catalog reflects every commit made before this call; raise if it cannot."""
        if self.failure is not None:
            raise self.failure
        target = self.index.generation
        while self._seen < target:
            if self._running is None:
                self._running = asyncio.ensure_future(self._catch_up())
                self._running.add_done_callback(_retrieve)
            await asyncio.shield(self._running)

    async def follow(self) -> None:
        """Catch up and probe the database until cancelled."""
        while True:
            await asyncio.sleep(FOLLOW_SECONDS)
            try:
                await asyncio.get_running_loop().run_in_executor(self._pool, self.index.cursor)
                self.failure = None
                await self.current()
            except StoreUnavailable as exc:
                if self.failure is None:
                    log.warning("index unreachable reason=%s", exc.reason)
                self.failure = exc
            except StoreError:
                pass  # the requests that wait on the same catch-up report it

    async def _catch_up(self) -> None:
        try:
            generation = self.index.generation
            catalog = self.catalog
            accounts, tracks = await asyncio.get_running_loop().run_in_executor(
                self._pool, self._read, catalog.tracks_seen, catalog.accounts_seen
            )
            if accounts:
                catalog.apply_accounts(accounts)
            for rows in tracks:
                for start in range(0, len(rows), SLICE):  # requests run between slices: none waits long
                    catalog.apply_tracks(rows[start : start + SLICE])
                    await asyncio.sleep(0)
            self._seen = max(self._seen, generation)
        finally:
            self._running = None

    def _read(self, tracks_since: int, accounts_since: int) -> Changes:
        with self.index.catalog() as snapshot:
            return snapshot.accounts(accounts_since), list(snapshot.tracks(tracks_since))


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # the awaiting requests report it; an unawaited failure must not log twice
