"""The consumer against a real Jetstream v1 server on loopback, writing through the real writer and store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from indexer import metrics
from indexer.atproto import tid
from indexer.config import IngestSettings
from indexer.db.duckdb_store import DuckDBStore
from indexer.db.writer import Writer
from indexer.ingest.consumer import Consumer
from indexer.ingest.events import Event
from indexer.ingest.planner import Planner
from tests.builders import make_settings
from tests.servers.events import account, commit, golden_events, identity, now_us, track_record
from tests.servers.jetstream import JetstreamServer
from tests.waiting import eventually

pytestmark = pytest.mark.slow  # end to end: real processes and servers

DIDS = [f"did:plc:{c * 24}" for c in "abcdefgh"]


def settings(*urls: str, **variables: Any) -> IngestSettings:
    defaults = {
        "RELAY_JETSTREAM_URLS": urls,
        "RELAY_BATCH_SIZE": 50,
        "RELAY_BATCH_SECONDS": 0.05,
        "RELAY_BACKOFF_MIN_SECONDS": 0.01,
        "RELAY_BACKOFF_MAX_SECONDS": 0.05,
        "RELAY_STALL_SECONDS": 1.0,
        "RELAY_QUIET_SECONDS": 60.0,
    }
    return make_settings(defaults, **variables).ingest


def tracks(n: int, start_us: int | None = None) -> list[dict[str, Any]]:
    """n creates spread over the accounts, one microsecond apart, each with a distinct rkey."""
    start = now_us() if start_us is None else start_us
    out = []
    for i in range(n):
        t = start + i
        key = tid.encode(t, 3)
        record = track_record(f"Song {i}", "Artist", f"https://audio.example/{i}.mp3", created_at="2026-01-01T00:00:00Z")
        out.append(commit(DIDS[i % len(DIDS)], key, key, "create", record, time_us=t))
    return out


class Harness:
    """A consumer whose batches go through the real Writer into a real DuckDB file."""

    def __init__(self, path: Path, config: IngestSettings, fail_batches: int = 0) -> None:
        self.store = DuckDBStore(path)
        self.writer = Writer(self.store)
        self.planner = Planner(self.store.known_accounts())
        self.fail_batches = fail_batches
        self.batches: list[list[Event]] = []
        stored = self.store.cursor()
        self.consumer = Consumer(
            config, self.emit, stored.time_us if stored else None, rewind_first=False, rng=random.Random(1)
        )

    async def emit(self, events: list[Event], source: str) -> None:
        if self.fail_batches:
            self.fail_batches -= 1
            raise RuntimeError("disk full")
        self.batches.append(events)
        await self.writer.apply(self.planner.plan(events), source)

    def count(self, sql: str = "SELECT count(*) FROM tracks") -> int:
        return self.store.reader().execute(sql).fetchone()[0]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Harness]:
        task = asyncio.create_task(self.consumer.run())
        try:
            yield self
        finally:
            self.consumer.stop()
            async with asyncio.timeout(10):
                await task
            self.writer.close()




@pytest.mark.parametrize("compress", [True, False])
async def test_replays_from_cursor_and_indexes_everything(tmp_path: Path, compress: bool) -> None:
    events = golden_events() + tracks(120)
    start = min(e["time_us"] for e in events)
    async with JetstreamServer(events) as server:
        harness = Harness(tmp_path / "db.duckdb", settings(server.url, RELAY_JETSTREAM_COMPRESS=compress))
        harness.consumer.cursor = start
        async with harness.running():
            await eventually(lambda: harness.count() == 120)
        query = server.connections[0].query
    assert query["wantedCollections"] == ["app.relay.track"]
    assert query["cursor"] == [str(start)]
    assert query.get("compress") == (["true"] if compress else None)
    # Only our collection's commits arrive; identity/account of unknown accounts cost nothing.
    assert harness.count("SELECT count(*) FROM accounts") == len(DIDS)
    assert harness.store.cursor().time_us == max(e["time_us"] for e in events)


async def test_no_cursor_means_live_only(tmp_path: Path) -> None:
    async with JetstreamServer(tracks(10)) as server:
        harness = Harness(tmp_path / "db.duckdb", settings(server.url))
        async with harness.running():
            await eventually(lambda: len(server.connections) == 1 and server.connections[0].status == 101)
            server.append(tracks(5))
            await eventually(lambda: harness.count() == 5)
        assert server.connections[0].cursor is None


async def test_dropped_connection_resumes_with_no_gap_and_no_duplicate(tmp_path: Path) -> None:
    events = tracks(300)
    async with JetstreamServer(events) as server:
        server.plan(drop_after=130)
        harness = Harness(tmp_path / "db.duckdb", settings(server.url, RELAY_REWIND_SECONDS=0.00002))
        harness.consumer.cursor = events[0]["time_us"]
        async with harness.running():
            await eventually(lambda: harness.count() == 300)
        first, second = server.connections[0], server.connections[1]
    assert first.sent == 130
    # The resume asks for the last applied event minus the rewind (20 µs here), never past it.
    assert second.cursor is not None and second.cursor <= events[129]["time_us"]
    applied = [e.time_us for batch in harness.batches for e in batch]
    assert sorted(set(applied)) == [e["time_us"] for e in events]  # no gap
    assert harness.count() == 300 and harness.count("SELECT count(DISTINCT rkey) FROM tracks") == 300  # no duplicate


async def test_stalled_server_is_left(tmp_path: Path) -> None:
    events = tracks(40)
    before = metrics.RECONNECTS.labels(reason="stall")._value.get()
    async with JetstreamServer(events) as server:
        server.plan(stall_after=10)
        harness = Harness(tmp_path / "db.duckdb", settings(server.url, RELAY_STALL_SECONDS=0.6))
        harness.consumer.cursor = events[0]["time_us"]
        async with harness.running():
            await eventually(lambda: harness.count() == 40)
        assert len(server.connections) >= 2
    assert metrics.RECONNECTS.labels(reason="stall")._value.get() == before + 1


async def test_garbage_frames_are_skipped_counted_and_lose_nothing(tmp_path: Path) -> None:
    events = tracks(20)
    garbage = [b"\x00\xff\xfe", "not json", '{"kind":', b"\x28\xb5\x2f\xfd\x00\x00", '{"did":"did:plc:x","kind":"commit"}']
    counter = metrics.REJECTIONS.labels(reason="malformed_frame")
    before = counter._value.get()
    async with JetstreamServer(events) as server:
        server.plan(garbage=garbage, at=7)
        harness = Harness(tmp_path / "db.duckdb", settings(server.url))
        harness.consumer.cursor = events[0]["time_us"]
        async with harness.running():
            await eventually(lambda: harness.count() == 20)
        assert len(server.connections) == 1  # garbage does not cost the connection
    assert counter._value.get() == before + len(garbage)


async def test_quiet_host_is_switched_with_a_deeper_rewind(tmp_path: Path) -> None:
    events = tracks(30)
    async with JetstreamServer(events) as quiet, JetstreamServer(events) as healthy:
        quiet.plan(quiet_after=10)
        config = settings(quiet.url, healthy.url, RELAY_QUIET_SECONDS=0.5, RELAY_REWIND_SECONDS=1.0, RELAY_SWITCH_REWIND_SECONDS=2.0)
        harness = Harness(tmp_path / "db.duckdb", config)
        harness.consumer.cursor = events[0]["time_us"]
        async with harness.running():
            await eventually(lambda: harness.count() == 30)
        assert quiet.connections[0].sent == 10
        assert healthy.connections[0].cursor == events[9]["time_us"] - 3_000_000


async def test_refused_handshake_rotates_to_the_next_host(tmp_path: Path) -> None:
    events = tracks(10)
    async with JetstreamServer(events) as refusing, JetstreamServer(events) as good:
        refusing.plan(refuse=503)
        harness = Harness(tmp_path / "db.duckdb", settings(refusing.url, good.url))
        harness.consumer.cursor = events[0]["time_us"]
        async with harness.running():
            await eventually(lambda: harness.count() == 10)
        assert refusing.connections[0].status == 503
        assert good.connections[0].cursor == events[0]["time_us"] - 15_000_000


async def test_unreachable_host_backs_off_and_retries(tmp_path: Path) -> None:
    events = tracks(5)
    async with JetstreamServer(events) as server:
        closed_port = "ws://127.0.0.1:9/subscribe"
        harness = Harness(tmp_path / "db.duckdb", settings(closed_port, server.url))
        harness.consumer.cursor = events[0]["time_us"]
        async with harness.running():
            await eventually(lambda: harness.count() == 5)


async def test_failed_batch_is_fetched_again_not_skipped(tmp_path: Path) -> None:
    events = tracks(60)
    async with JetstreamServer(events) as server:
        harness = Harness(tmp_path / "db.duckdb", settings(server.url, RELAY_REWIND_SECONDS=0.0), fail_batches=1)
        harness.consumer.cursor = events[0]["time_us"]
        async with harness.running():
            await eventually(lambda: harness.count() == 60)
        assert len(server.connections) == 2
        assert server.connections[1].cursor == events[0]["time_us"]


async def test_stop_flushes_what_was_received(tmp_path: Path) -> None:
    events = tracks(7)
    async with JetstreamServer(events) as server:
        harness = Harness(tmp_path / "db.duckdb", settings(server.url, RELAY_BATCH_SIZE=1000, RELAY_BATCH_SECONDS=30.0))
        harness.consumer.cursor = events[0]["time_us"]
        async with harness.running():
            await eventually(lambda: server.connections and server.connections[0].sent == 7)
            await asyncio.sleep(0.05)
        assert harness.count() == 0 or harness.count() == 7
    assert harness.count() == 7
    assert harness.store.cursor().time_us == events[-1]["time_us"]


async def test_account_and_identity_events_reach_known_accounts(tmp_path: Path) -> None:
    events = tracks(8)
    events.append(account(DIDS[0], False, "takendown", time_us=events[-1]["time_us"] + 1))
    events.append(identity(DIDS[1], "new.test", time_us=events[-1]["time_us"] + 1))
    async with JetstreamServer(events) as server:
        harness = Harness(tmp_path / "db.duckdb", settings(server.url))
        harness.consumer.cursor = events[0]["time_us"]
        async with harness.running():
            await eventually(lambda: harness.count("SELECT count(*) FROM tracks WHERE hidden") == 1)
    assert harness.count("SELECT count(*) FROM accounts WHERE NOT active") == 1


async def test_idle_server_that_answers_pings_is_not_a_stall(tmp_path: Path) -> None:
    events = tracks(3)
    async with JetstreamServer(events) as server:
        harness = Harness(tmp_path / "db.duckdb", settings(server.url, RELAY_STALL_SECONDS=0.4))
        harness.consumer.cursor = events[0]["time_us"]
        async with harness.running():
            await eventually(lambda: harness.count() == 3)
            await asyncio.sleep(1.5)  # several stall periods with no message, but pongs keep coming
        assert len(server.connections) == 1


def oversized(after: dict[str, Any], size: int) -> dict[str, Any]:
    """A track commit, one microsecond after `after`, whose record makes the event `size` bytes or more."""
    t = after["time_us"] + 1
    key = tid.encode(t, 5)
    record = track_record("x" * size, "Artist", "https://audio.example/big.mp3", created_at="2026-01-01T00:00:00Z")
    return commit(DIDS[0], key, key, "create", record, time_us=t)


def oversized_count() -> float:
    return metrics.REJECTIONS.labels(reason="oversized_frame")._value.get()


@pytest.mark.parametrize("position", [0, 10])
async def test_a_frame_over_the_websocket_cap_is_skipped_and_the_next_event_indexed(
    tmp_path: Path, position: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A host that ignores maxMessageSizeBytes sends a 5 MiB text frame: the connection closes with 1009,
    and the next one starts just past it instead of receiving it forever."""
    events = tracks(20)
    for event in events[position:]:
        event["time_us"] += 10  # room for the oversized event, so that no other event shares its time
    previous = events[position - 1] if position else {"time_us": events[0]["time_us"] - 5}
    events.insert(position, oversized(previous, 5 * 1024 * 1024))
    before = oversized_count()
    async with JetstreamServer(events, honours_max_message_size=False) as server:
        harness = Harness(tmp_path / "db.duckdb", settings(server.url, RELAY_JETSTREAM_COMPRESS=False))
        harness.consumer.cursor = events[0]["time_us"]  # at position 0, the oversized event comes first
        with caplog.at_level(logging.WARNING, logger="indexer.ingest.consumer"):
            async with harness.running():
                await eventually(lambda: harness.count() == 20)
    assert oversized_count() == before + 1
    assert len(server.connections) == 2  # one close, one connection that reads past the frame: no loop
    logged = [r.getMessage() for r in caplog.records if "frame" in r.getMessage()]
    assert logged == [
        "a frame over 4194304 bytes closed the connection (1009); the next connection reads with a cap of "
        "67108864 bytes to receive it and skip it",
        f"oversized frame skipped reason=frame of {len(orjson.dumps(events[position]))} bytes, over 2097152",
    ]


async def test_a_frame_over_the_event_limit_is_refused_on_the_same_connection(tmp_path: Path) -> None:
    events = tracks(20)
    events.insert(10, oversized(events[9], 3 * 1024 * 1024))
    before = oversized_count()
    async with JetstreamServer(events, honours_max_message_size=False) as server:
        harness = Harness(tmp_path / "db.duckdb", settings(server.url, RELAY_JETSTREAM_COMPRESS=False))
        harness.consumer.cursor = events[0]["time_us"]
        async with harness.running():
            await eventually(lambda: harness.count() == 20)
    assert oversized_count() == before + 1
    assert len(server.connections) == 1


async def test_a_host_that_honours_max_message_size_never_sends_the_oversized_event(tmp_path: Path) -> None:
    events = tracks(20)
    events.insert(10, oversized(events[9], 5 * 1024 * 1024))
    before = oversized_count()
    async with JetstreamServer(events) as server:
        harness = Harness(tmp_path / "db.duckdb", settings(server.url, RELAY_JETSTREAM_COMPRESS=False))
        harness.consumer.cursor = events[0]["time_us"]
        async with harness.running():
            await eventually(lambda: harness.count() == 20)
    assert server.connections[0].query["maxMessageSizeBytes"] == ["2097152"]
    assert (oversized_count(), len(server.connections)) == (before, 1)


async def test_a_frame_over_even_the_skip_cap_is_stepped_over_by_cursor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events = tracks(20)
    for event in events[10:]:
        event["time_us"] += 10
    events.insert(10, oversized(events[9], 65 * 1024 * 1024))
    before = oversized_count()
    async with JetstreamServer(events, honours_max_message_size=False) as server:
        harness = Harness(tmp_path / "db.duckdb", settings(server.url, RELAY_JETSTREAM_COMPRESS=False))
        harness.consumer.cursor = events[0]["time_us"]
        with caplog.at_level(logging.WARNING, logger="indexer.ingest.consumer"):
            async with harness.running():
                await eventually(lambda: harness.count() == 20, timeout=60)
    assert oversized_count() == before + 1
    # the normal cap and the skip cap each close on it after the ten events before it; a step past the last
    # of those still meets it first (it is one microsecond later), and a step twice as long passes it
    last = events[9]["time_us"]
    assert [c.cursor for c in server.connections[2:]] == [last + 1, last + 3]
    stepped = [r.getMessage().split("resuming at ")[1].split(",")[0] for r in caplog.records if "stepping past it" in r.getMessage()]
    assert stepped == [f"cursor={last + 1}", f"cursor={last + 3}"]
