"""The feed process and the indexing process together: what crosses between them, and what happens when
either side fails. A real Jetstream server, a real audio host, a real DuckDB file."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from indexer import metrics
from indexer.atproto.nsid import TRACK_COLLECTION
from indexer.config import Settings
from indexer.db.batch import Batch
from indexer.db.duckdb_store import DuckDBStore
from indexer.ingest.events import Commit
from tests.reference import reference, snapshot
from tests.running import indexer_settings, running_indexer
from tests.servers.audio import AudioServer
from tests.servers.events import account, now_us, synthetic_track_events, track_record
from tests.servers.jetstream import JetstreamServer
from tests.waiting import eventually

pytestmark = pytest.mark.slow  # end to end: real processes and servers

N_EVENTS = 6_000


def config(server: JetstreamServer) -> Settings:
    return indexer_settings(server.url, RELAY_AUDIO_RETRIES=1, RELAY_BATCH_SIZE=500)


def make_events(audio: AudioServer) -> list[dict[str, Any]]:
    events = list(synthetic_track_events(N_EVENTS, audio_base_url="", accounts=200, seed=5))
    for i, event in enumerate(events):
        record = event["commit"].get("record")
        if record is not None:
            record["audioUrl"] = audio.url(f"/audio/{i % 8}.mp3")
    return events


class FailingStore(DuckDBStore):
    """A store whose `fail_at`-th write of a batch fails, as a full disk would; it notes what the writes
    after that one saw of the Jetstream server, to show which connection their events came from."""

    def __init__(self, path: Path, fail_at: int, server: JetstreamServer) -> None:
        super().__init__(path)
        self.applied = 0
        self.fail_at = fail_at
        self.server = server
        self.connections_after_failure: list[int] = []

    def apply(self, batch: Batch, source: str | None) -> list[str]:
        self.applied += 1
        if self.applied == self.fail_at:
            raise OSError("No space left on device")
        if self.applied > self.fail_at:
            self.connections_after_failure.append(len(self.server.connections))
        return super().apply(batch, source)


def received(kind: str) -> float:
    return metrics.EVENTS_RECEIVED.labels(kind=kind)._value.get()


async def test_feed_killed_mid_stream_is_started_again_and_the_index_equals_a_clean_run(
    tmp_path: Path, audio_server: AudioServer
) -> None:
    events = make_events(audio_server)
    last = events[-1]["time_us"]
    store = DuckDBStore(tmp_path / "db.duckdb")
    async with JetstreamServer(events) as server:
        settings = config(server)
        async with running_indexer(settings, store, events[0]["time_us"]) as indexer:
            await eventually(lambda: indexer.cursor is not None and indexer.cursor > events[N_EVENTS // 4]["time_us"])
            first = indexer._feed
            assert first is not None and first.pid is not None
            os.kill(first.pid, signal.SIGKILL)
            await eventually(lambda: indexer._feed is not None and indexer._feed is not first, 30.0)
            await eventually(lambda: indexer.cursor == last, 30.0)
            assert first.exitcode == -signal.SIGKILL
            assert len(server.connections) == 2
            # The new feed resumed a few seconds before the cursor of the last committed batch.
            assert server.connections[1].cursor is not None and server.connections[1].cursor < last
    assert snapshot(store) == reference(tmp_path / "clean.duckdb", events)
    assert store.cursor().time_us == last
    store.close()


async def test_a_batch_that_fails_to_commit_is_refused_with_the_rest_of_its_connection(
    tmp_path: Path, audio_server: AudioServer
) -> None:
    events = make_events(audio_server)
    last = events[-1]["time_us"]
    before = received("commit")
    async with JetstreamServer(events) as server:
        store = FailingStore(tmp_path / "db.duckdb", fail_at=3, server=server)
        async with running_indexer(config(server), store, events[0]["time_us"]) as indexer:
            await eventually(lambda: indexer.cursor == last, 30.0)
        # Batches after the failed one were already shipped on the first connection; none was committed:
        # every commit after the failure holds events of the second connection, resumed from the cursor.
        assert store.connections_after_failure and set(store.connections_after_failure) == {2}
        assert len(server.connections) == 2
    assert snapshot(store) == reference(tmp_path / "clean.duckdb", events)
    # The feed's counters reach this process's registry: both connections' events, the refused included.
    assert received("commit") - before > N_EVENTS
    store.close()


async def test_an_account_first_indexed_by_a_local_write_is_followed_by_the_feed(
    tmp_path: Path, audio_server: AudioServer
) -> None:
    did = "did:plc:ffffffffffffffffffffffff"
    record = track_record("Local", "Artist", audio_server.url("/audio/local.mp3"), created_at="2026-01-01T00:00:00Z")
    store = DuckDBStore(tmp_path / "db.duckdb")
    async with JetstreamServer([]) as server:
        async with running_indexer(config(server), store, None) as indexer:
            await eventually(lambda: indexer.status()["jetstream"] == server.url)
            await indexer.index.ingest_local(
                Commit(did, now_us(), "3mmoojp7vgo2a", "create", TRACK_COLLECTION, "3mmoojp7vgo2a", record, "bafy"),
                None,
                None,
            )
            await asyncio.sleep(0.2)  # the feed learns the account over its socket, before Jetstream's next event
            server.append(account(did, False, "takendown"))
            await eventually(lambda: store.reader().execute("SELECT hidden FROM tracks").fetchall() == [(True,)])
    store.close()
