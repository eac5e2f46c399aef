"""The index as the rest of the service sees it: one writer for every change, and the reads the API needs.

Everything written into the index goes through this object's one `Writer`: Jetstream batches (the
`Indexer` commits through `commit`), local publishes, audio verdicts, handles, kept secrets and the web
sign-in sessions. The API holds an `Index` and sees neither the planner nor the writer nor SQL.

A record this service writes to a PDS reaches the index through Jetstream too, later. To show it at once,
`ingest_local` takes the commit event Jetstream will deliver (same DID, rkey, rev and CID) through the
same planner and writer, so it is indexed exactly as the Jetstream copy would be, and that copy then
changes nothing (the store ignores a rev it already has).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager

from indexer.atproto.nsid import TRACK_COLLECTION
from indexer.db.batch import Batch
from indexer.db.rows import AudioResult, AudioState, Status, StoredCursor, SyncProgress
from indexer.db.store import CatalogSnapshot, Store, now_us
from indexer.db.writer import Writer
from indexer.ingest.events import Commit
from indexer.ingest.planner import PROVEN, Planner

STORED_HERE = "stored by this service while publishing"
_CURSOR_SECRET_KEY = "api_cursor_secret"

NewAccounts = Callable[[dict[str, int]], None]


def stored_audio(url: str, content_type: str) -> AudioResult:
    """The verdict on audio this service stored itself while publishing: the bytes are in our storage."""
    return AudioResult(url, AudioState.VERIFIED, STORED_HERE, None, content_type)


def local_commit(did: str, rkey: str, rev: str, cid: str | None, record: dict[str, object] | None) -> Commit:
    """The commit event Jetstream will deliver for a write made here (a delete when `record` is None)."""
    operation = "delete" if record is None else "create"
    return Commit(did, now_us(), rev, operation, TRACK_COLLECTION, rkey, record, cid)


class Index:
    def __init__(self, store: Store, *, max_future_us: int, verify: bool = True) -> None:
        """`verify`: records from the stream wait for their PDS's proof (RELAY_VERIFY_RECORDS)."""
        self.store = store
        self.writer = Writer(store)
        self._max_future_us = max_future_us
        self._verify = verify
        self.planner = Planner(store.known_accounts(), max_future_us, verify=verify)
        self.on_new_accounts: NewAccounts | None = None  # the Indexer tells its feed process

    def close(self) -> None:
        self.writer.close()

    # -- writes ----------------------------------------------------------------------------------------

    async def commit(self, batch: Batch, source: str | None) -> list[str]:
        """Commit a planned batch; returns the audio URLs that now need a check."""
        try:
            pending = await self.writer.apply(batch, source)
        except Exception:
            # Rolled back: forget the accounts learned from batches that were not stored.
            await self.reload_accounts()
            raise
        self.planner.known.update(batch.new_accounts)
        return pending

    async def lead(self) -> bool:
        """Hold the indexer's writer lock, taking it if it is free (see Store.lead)."""
        return await self.writer.lead()

    async def reload_accounts(self) -> None:
        """Plan from the accounts the store holds: after a failed commit, or on taking over from another
        indexer, which may have indexed accounts this process never saw."""
        known = await asyncio.to_thread(self.store.known_accounts)
        self.planner = Planner(known, self._max_future_us, verify=self._verify)

    async def ingest_local(self, commit: Commit, audio: AudioResult | None, handle: str | None) -> None:
        """Index a record this process just wrote to its author's PDS. `audio` is a check to record first
        (so the track is stored verified); `handle` is the DID document's, for an account new here."""
        if audio is not None:
            await self.writer.record_audio([audio])
        # Proven: its PDS itself just answered the write made here, under the author's session.
        batch = self.planner.plan([commit], proof=PROVEN)
        batch.cursor = None  # not a Jetstream event: the stream's cursor must not move
        await self.commit(batch, None)
        if batch.new_accounts:
            if self.on_new_accounts is not None:
                self.on_new_accounts(batch.new_accounts)
            if handle is not None:
                await self.writer.set_handles({did: handle for did in batch.new_accounts})

    def cursor_secret(self, configured: str) -> bytes:
        """The configured secret, else the stored one, else a new one stored now (blocks: call at start-up)."""
        if configured:
            return configured.encode()
        return self.kept(_CURSOR_SECRET_KEY, lambda: secrets.token_hex(32)).encode()

    def kept(self, key: str, make: Callable[[], str], usable: Callable[[str], bool] = bool) -> str:
        """The value stored under `key`, or a new one from `make()` stored now when there is none or the
        stored one is not `usable` (blocks: call at start-up)."""
        stored = self.store.meta(key)
        if stored is None or not usable(stored):
            # Another process on the same database may store one first: then every process keeps that one.
            stored = self.writer.keep_meta(key, make(), replace=stored)
        return stored

    async def record_upload(self, did: str, key: str, size: int) -> None:
        """What an account's published object weighs, for its quota."""
        await self.writer.record_upload(did, key, size)

    # -- web sign-in sessions (sealed by the API; see Store) -----------------------------------------

    async def save_oauth_session(self, key: str, did: str, sealed: bytes) -> None:
        await self.writer.save_oauth_session(key, did, sealed)

    async def delete_oauth_session(self, key: str) -> None:
        await self.writer.delete_oauth_session(key)

    async def save_oauth_request(self, key: str, sealed: bytes, expires_us: int) -> None:
        await self.writer.save_oauth_request(key, sealed, expires_us)

    async def take_oauth_request(self, key: str) -> bytes | None:
        return await self.writer.take_oauth_request(key, now_us())

    async def purge_oauth(self, idle_before_us: int) -> None:
        await self.writer.purge_oauth(now_us(), idle_before_us)

    # -- reads (blocking: call from a worker thread) ---------------------------------------------------

    @property
    def generation(self) -> int:
        """Bumped after every commit that changes what readers see."""
        return self.store.generation

    def catalog(self) -> AbstractContextManager[CatalogSnapshot]:
        return self.store.catalog()

    def key_in_use(self, key: str, besides: tuple[str, str] | None = None) -> bool:
        return self.store.key_in_use(key, besides)

    def account_bytes(self, did: str) -> int:
        return self.store.account_bytes(did)

    def writes_failing(self) -> tuple[float, str] | None:
        """(seconds, reason) while writes keep failing; None once one succeeds."""
        return self.writer.failing()

    def cursor(self) -> StoredCursor | None:
        return self.store.cursor()

    def oauth_session(self, key: str) -> bytes | None:
        return self.store.oauth_session(key)

    def status(self, recent_rejections: int = 10) -> Status:
        return self.store.status(recent_rejections)

    def sync_progress(self, since_us: int = 0) -> SyncProgress:
        return self.store.sync_progress(since_us)
