"""Roles on one PostgreSQL database: a second indexer stands by while the first holds the writer lock, says
so, and takes over from the stored cursor when the lock is free."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from indexer.db.pg_store import PgStore
from tests.builders import Applier
from tests.reference import reference, snapshot
from tests.running import indexer_settings, running_indexer
from tests.servers.audio import AudioServer
from tests.servers.events import synthetic_track_events
from tests.servers.jetstream import JetstreamServer
from tests.waiting import eventually


async def test_a_second_indexer_stands_by_then_takes_over_from_the_stored_cursor(
    tmp_path: Path, pg_url: str, audio_server: AudioServer, caplog: pytest.LogCaptureFixture
) -> None:
    events = list(synthetic_track_events(600, audio_base_url=audio_server.url(""), accounts=20, seed=5))
    first = Applier(PgStore(pg_url))
    first.apply(*events[:300], source="first")  # the first indexer got this far; it holds the lock
    caplog.set_level(logging.INFO, logger="indexer.ingest.service")
    store = PgStore(pg_url)
    try:
        async with JetstreamServer(events) as server:
            settings = indexer_settings(server.url)
            async with running_indexer(settings, store, None) as indexer:
                await eventually(lambda: indexer.standby)
                assert "standby: another indexer holds the writer lock; waiting to take over" in caplog.messages
                assert indexer.status()["standby"] is True and server.connections == []
                first.store.close()  # it stops (or dies): its session ends and the lock is free
                await eventually(lambda: store.cursor().time_us == events[-1]["time_us"], 20)
                assert "took over the writer lock; indexing from the stored cursor" in caplog.messages
                assert server.connections[0].cursor == events[299]["time_us"] - 5_000_000  # the stored cursor
                assert indexer.status()["standby"] is False
        assert snapshot(store) == reference(tmp_path / "clean.duckdb", events)
    finally:
        store.close()
