"""kill -9 in the middle of indexing, then restart: nothing half-applied, nothing lost.

The indexer runs as a real `relay-appview` process against a real Jetstream server. DuckDB lets one
process open the file, so the test reads it only after the process is gone.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from indexer.db.duckdb_store import DuckDBStore
from tests.builders import NO_BACKFILL
from tests.reference import reference, snapshot
from tests.servers.audio import AudioServer
from tests.servers.events import account, synthetic_track_events, track_record
from tests.servers.jetstream import JetstreamServer
from tests.waiting import eventually

pytestmark = pytest.mark.slow  # end to end: real processes and servers

N_EVENTS = 40_000


def make_events(audio: AudioServer) -> list[dict[str, Any]]:
    events = list(synthetic_track_events(N_EVENTS, audio_base_url="", accounts=300, seed=11))
    for i, event in enumerate(events):  # few distinct URLs, so the checks finish quickly
        record = event["commit"].get("record")
        if record is not None:
            record["audioUrl"] = audio.url(f"/audio/{i % 16}.mp3")
    # The last event's audio URL is unique: its check is only asked for once the last batch is committed.
    last = events[-1]
    key = last["commit"]["rev"][:-1] + "z"
    events.append({**last, "time_us": last["time_us"] + 1, "commit": {
        "rev": key, "operation": "create", "collection": "app.relay.track", "rkey": key, "cid": "bafyreisentinel",
        "record": track_record("Sentinel", "Artist", audio.url("/audio/sentinel.mp3"), created_at="2026-01-01T00:00:00Z"),
    }})
    return events


async def start(args: list[str], db: Path, server: JetstreamServer, stderr: bool = False) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "RELAY_DB_PATH": str(db),
        "RELAY_JETSTREAM_URLS": server.url,
        "RELAY_ALLOW_INSECURE": "true",
        "RELAY_PLC_URL": "http://127.0.0.1:9",
        "RELAY_BATCH_SIZE": "1000",
        "RELAY_VERIFY_RECORDS": "false",  # synthetic records: no PDS holds them
        **NO_BACKFILL,
        "RELAY_LOG_LEVEL": "WARNING",
    }
    pipe = asyncio.subprocess.PIPE if stderr else None
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "appview_api.cli", *args, env=env, stderr=pipe)




async def test_sigkill_mid_batch_then_restart_equals_a_clean_run(tmp_path: Path, audio_server: AudioServer) -> None:
    events = make_events(audio_server)
    db = tmp_path / "crash.duckdb"
    async with JetstreamServer(events) as server:
        process = await start(["replay", "--cursor", str(events[0]["time_us"])], db, server)
        # Half the stream sent, and a batch committed (audio is checked only once its track is stored).
        await eventually(
            lambda: bool(server.connections)
            and server.connections[0].sent >= N_EVENTS // 2
            and sum(audio_server.hits.values()) > 0,
            60.0,
        )
        helpers = children(process.pid)  # the feed process (and multiprocessing's resource tracker)
        assert helpers
        process.send_signal(signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL
        await eventually(lambda: not any(alive(pid) for pid in helpers))  # none outlives the indexer

        # After the kill the index holds exactly the events up to the stored cursor: no half batch.
        store = DuckDBStore(db)
        cursor = store.cursor().time_us
        assert events[0]["time_us"] < cursor < events[-1]["time_us"]
        prefix = [e for e in events if e["time_us"] <= cursor]
        assert snapshot(store) == reference(tmp_path / "prefix.duckdb", prefix)
        store.close()

        # Restarted, it resumes from the cursor and ends where an uninterrupted run ends.
        process = await start(["index"], db, server)
        await eventually(lambda: audio_server.hits["/audio/sentinel.mp3"] >= 1, 60.0)
        await asyncio.sleep(1.0)  # let the last check's result be written (results flush every 0.25 s)
        process.send_signal(signal.SIGTERM)
        assert await process.wait() == 0
        assert server.connections[1].cursor == cursor - 5_000_000

    store = DuckDBStore(db)
    urls = sorted({e["commit"]["record"]["audioUrl"] for e in events if "record" in e["commit"]})
    assert snapshot(store, with_audio=True) == reference(tmp_path / "clean.duckdb", events, urls)
    assert store.cursor().time_us == events[-1]["time_us"]
    store.close()


def children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()]


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie nobody has reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_sigterm_mid_stream_stops_quietly_and_keeps_every_committed_event(
    tmp_path: Path, audio_server: AudioServer
) -> None:
    events = make_events(audio_server)
    db = tmp_path / "term.duckdb"
    async with JetstreamServer(events) as server:
        process = await start(["replay", "--cursor", str(events[0]["time_us"])], db, server, stderr=True)
        await eventually(lambda: bool(server.connections) and server.connections[0].sent >= N_EVENTS // 2, 60.0)
        process.send_signal(signal.SIGTERM)
        _, stderr = await process.communicate()
    assert process.returncode == 0
    problems = [line for line in stderr.decode().splitlines() if " ERROR " in line or "Traceback" in line or "never retrieved" in line]
    assert problems == []
    # Everything up to the stored cursor is there, and nothing past it.
    store = DuckDBStore(db)
    cursor = store.cursor().time_us
    assert snapshot(store) == reference(tmp_path / "prefix.duckdb", [e for e in events if e["time_us"] <= cursor])
    store.close()


def with_account_events(events: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Account events among the commits: deactivations, takedowns, deletions and reactivations of accounts
    that have tracks, some before an account's first commit, at times between the commits'."""
    rng = random.Random(seed)
    dids = sorted({e["did"] for e in events})
    mixed = list(events)
    for n in range(400):
        at = rng.randrange(1, len(mixed))
        t = (mixed[at - 1]["time_us"] + mixed[at]["time_us"]) // 2
        if t == mixed[at - 1]["time_us"]:
            continue
        active, status = rng.choice([(True, None), (False, "deactivated"), (False, "takendown"), (False, "deleted")])
        mixed.insert(at, account(rng.choice(dids), active, status, seq=n, time_us=t))
    return mixed


async def test_kill_9_at_random_points_with_account_events_then_restart_equals_a_clean_run(
    tmp_path: Path, audio_server: AudioServer
) -> None:
    events = with_account_events(make_events(audio_server), seed=7)
    db = tmp_path / "kills.duckdb"
    rng = random.Random(11)
    async with JetstreamServer(events) as server:
        cursors = []
        for kill in range(3):
            args = ["replay", "--cursor", str(events[0]["time_us"])] if kill == 0 else ["index"]
            process = await start(args, db, server)
            started = len(server.connections)
            await eventually(lambda n=started: len(server.connections) > n and server.connections[-1].sent > 200, 60.0)
            await asyncio.sleep(rng.uniform(0.05, 0.3))  # somewhere mid-batch
            process.send_signal(signal.SIGKILL)
            await process.wait()
            store = DuckDBStore(db)
            cursors.append(store.cursor().time_us)
            store.close()
        # Each kill landed mid-stream, later each time (a restart resumes from the stored cursor).
        assert cursors == sorted(cursors) and cursors[-1] < events[-1]["time_us"]
        process = await start(["index"], db, server)
        await eventually(lambda: audio_server.hits["/audio/sentinel.mp3"] >= 1, 60.0)
        await asyncio.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        assert await process.wait() == 0

    store = DuckDBStore(db)
    clean = tmp_path / "clean.duckdb"
    assert snapshot(store) == reference(clean, events)
    reference_store = DuckDBStore(clean)
    accounts = "SELECT did, active, status, status_at_us, seq FROM accounts ORDER BY did"
    assert store.reader().execute(accounts).fetchall() == reference_store.reader().execute(accounts).fetchall()
    reference_store.close()
    store.close()
