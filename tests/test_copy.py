"""`relay-appview db copy`: a DuckDB index into an empty PostgreSQL database, every table and column, and an
indexer on the copy resumes from the copied cursor."""

from __future__ import annotations

from pathlib import Path

import pytest

from appview_api.cli import main
from indexer.db.duckdb_store import DuckDBStore
from indexer.db.pg_store import PgStore
from indexer.db.rows import AudioResult, AudioState
from indexer.db.store import Store
from tests.builders import Applier
from tests.reference import reference, snapshot
from tests.running import indexer_settings, running_indexer
from tests.servers.audio import AudioServer
from tests.servers.events import account, synthetic_track_events
from tests.servers.jetstream import JetstreamServer
from tests.stores import query
from tests.waiting import eventually

TABLES = ("accounts", "audio_checks", "cursor", "meta", "oauth_requests", "oauth_sessions", "rejections", "tracks")


def everything(store: Store) -> dict[str, list[tuple]]:
    """Every row of every table, in one order on both backends."""
    found = {}
    for table in TABLES:
        columns = [name for (name,) in query(
            store, "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY column_name", table
        )]
        listed = ", ".join(columns)
        found[table] = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                        for row in query(store, f"SELECT {listed} FROM {table} ORDER BY {listed}")]
    return found


def make_index(path: Path, events: list[dict]) -> DuckDBStore:
    store = DuckDBStore(path)
    applier = Applier(store)
    applier.apply(*events, account(events[0]["did"], False, "takendown", seq=5, time_us=events[-1]["time_us"]))
    bad = {**events[1], "commit": {**events[1]["commit"], "rkey": "not a tid"}}
    applier.apply(bad, source="jetstream")
    urls = sorted({e["commit"]["record"]["audioUrl"] for e in events if "record" in e["commit"]})
    store.record_audio([AudioResult(url, AudioState.VERIFIED, "HTTP 200", 200, "audio/mpeg") for url in urls[:5]])
    store.set_handles({events[2]["did"]: "someone.test"})
    store.save_oauth_session("session-key", events[2]["did"], b"\x00\x01sealed\xff")
    store.save_oauth_request("state-key", b"\x02in flight", 1_900_000_000_000_000)
    store.set_meta("api_cursor_secret", "a" * 64)
    return store


def test_copy_moves_every_row_and_refuses_a_database_that_is_not_empty(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    events = list(synthetic_track_events(3000, audio_base_url="https://audio.example", accounts=30, seed=4))
    source = make_index(tmp_path / "relay.duckdb", events)
    expected = everything(source)
    source.close()
    assert sum(1 for row in expected["tracks"] if row[4]) > 50  # tombstones among them (column `deleted`)

    assert main(["db", "copy", "--to", pg_url, "--db", str(tmp_path / "relay.duckdb")]) == 0
    out, err = capsys.readouterr()
    tracks = len(expected["tracks"])
    assert f"tracks: {tracks:,} of {tracks:,} rows" in err.splitlines()
    assert "cursor: 1 of 1 rows" in err.splitlines()
    assert out.startswith("copied ")

    copy = PgStore(pg_url)
    try:
        assert everything(copy) == expected
        # New stamps come after every copied one, so replicas of the copy catch up on new writes.
        stamp = max(row[0] for row in query(copy, "SELECT changed_us FROM tracks"))
        assert query(copy, "SELECT stamp FROM clock")[0][0] >= stamp
    finally:
        copy.close()

    assert main(["db", "copy", "--to", pg_url, "--db", str(tmp_path / "relay.duckdb")]) == 2
    assert capsys.readouterr().err == (
        # The first table in name order with rows: every account has its repository sync's row too.
        f"relay-appview: {pg_url} is not empty (account_syncs has rows): copy into an empty database\n"
    )


async def test_an_indexer_on_the_copy_resumes_from_the_copied_cursor(
    tmp_path: Path, pg_url: str, audio_server: AudioServer, capsys: pytest.CaptureFixture[str]
) -> None:
    events = list(synthetic_track_events(800, audio_base_url=audio_server.url(""), accounts=20, seed=8))
    source = DuckDBStore(tmp_path / "relay.duckdb")
    Applier(source).apply(*events[:400], source="jetstream")
    source.close()
    assert main(["db", "copy", "--to", pg_url, "--db", str(tmp_path / "relay.duckdb")]) == 0
    store = PgStore(pg_url)
    try:
        async with JetstreamServer(events) as server:
            async with running_indexer(indexer_settings(server.url), store, None):
                await eventually(lambda: store.cursor().time_us == events[-1]["time_us"], 20)
            assert server.connections[0].cursor == events[399]["time_us"] - 5_000_000
        assert snapshot(store) == reference(tmp_path / "clean.duckdb", events)
    finally:
        store.close()
