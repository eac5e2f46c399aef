"""Publishing's view of the local index: show a write at once, and know who else uses an audio object.

A record this service writes to a PDS reaches the index through Jetstream too, later. To show it at once,
the write is turned into the commit event Jetstream will deliver (same DID, rkey, rev and CID) and fed
through the indexer's own planner and writer, so it is indexed exactly as the Jetstream copy would be,
and that copy then changes nothing (the store ignores a rev it already has). In `serve` the indexer owns
the only writer, so it does this (`Indexer.ingest_local`); with --no-index there is no indexer in the
process, and `LocalIndex` brings a writer of its own over the same Store (still one writing process).

The audio check is recorded before the commit is applied, so the track is stored already verified: the
bytes were stored by this very request, in our own storage, and the check's reason says so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio.to_thread

from indexer.db.store import Store, now_us
from indexer.db.writer import Writer
from indexer.ingest.events import TRACK_COLLECTION, Commit
from indexer.ingest.planner import Planner
from indexer.ingest.staging import stage
from indexer.net.audio_check import AudioResult, AudioState

# (the synthetic commit, the audio check to record first or None, the handle from the DID document)
PublishSink = Callable[[Commit, AudioResult | None, str | None], Awaitable[None]]

STORED_HERE = "stored by this service while publishing"


def stored_audio(url: str, content_type: str) -> AudioResult:
    return AudioResult(url, AudioState.VERIFIED, STORED_HERE, None, content_type)


def local_commit(did: str, rkey: str, rev: str, cid: str | None, record: dict[str, object] | None) -> Commit:
    """The commit event Jetstream will deliver for this write (a delete when `record` is None)."""
    operation = "delete" if record is None else "create"
    return Commit(did, now_us(), rev, operation, TRACK_COLLECTION, rkey, record, cid)


class LocalIndex:
    """The publish sink when no indexer runs in this process."""

    def __init__(self, store: Store, max_future_us: int) -> None:
        self._store = store
        self._writer = Writer(store)
        self._max_future_us = max_future_us
        self._planner: Planner | None = None

    async def ingest(self, commit: Commit, audio: AudioResult | None, handle: str | None) -> None:
        if self._planner is None:
            self._planner = Planner(await anyio.to_thread.run_sync(self._store.known_dids), self._max_future_us)
        if audio is not None:
            await self._writer.record_audio([audio])
        batch = stage(self._planner.plan([commit]))
        batch.cursor = None  # not a Jetstream event: the stream's cursor must not move
        try:
            await self._writer.apply(batch, None)
        except Exception:
            self._planner = None  # it may have learned an account that was not stored
            raise
        if handle is not None and batch.new_accounts:
            await self._writer.set_handles({did: handle for did in batch.new_accounts})

    def close(self) -> None:
        self._writer.close()


def key_in_use(store: Store, key: str, *, besides: tuple[str, str] | None = None) -> bool:
    """Does a live track other than `besides` (did, rkey) point at this object, from any base URL?

    Matching the URL's last segment finds the object whether it was published while the audio lived
    on local disk or in R2: the key is a sha256, so no other URL ends with it by chance. Blocks.
    """
    did, rkey = besides or ("", "")
    row = store.reader().execute(
        "SELECT 1 FROM tracks WHERE NOT deleted AND ends_with(audio_url, ?) AND NOT (did = ? AND rkey = ?) LIMIT 1",
        ["/" + key, did, rkey],
    ).fetchone()
    return row is not None
