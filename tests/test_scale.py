"""Beyond one machine, end to end: real `relay-appview` processes sharing one real PostgreSQL database.

An indexer and two API replicas; events through the test Jetstream reach both; a publish through one
replica shows on the other; kill -9 of the indexer hands over to a standby with nothing lost; PostgreSQL
restarted under load costs 503s during the outage only; a replica restarted or cut off catches up.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from indexer.db.pg_store import PgStore
from tests.builders import NO_BACKFILL
from tests.fixtures.pds import LocalPds
from tests.fixtures.publish import DATA
from tests.reference import reference, snapshot
from tests.servers.audio import AudioServer
from tests.servers.events import synthetic_track_events
from tests.servers.jetstream import JetstreamServer
from tests.servers.postgres import Cluster, binaries, free_port
from tests.test_crash import make_events
from tests.waiting import eventually

pytestmark = pytest.mark.slow  # end to end: real processes and servers

CLI = str(Path(sys.executable).with_name("relay-appview"))
FEED = "/xrpc/app.relay.feed.getTracks"


class Service:
    """One `relay-appview` process; its log goes to a file the test can read."""

    def __init__(self, tmp_path: Path, name: str, args: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / f"{name}.log"
        self.args, self.env = args, {**env, "RELAY_PORT": str(self.port), "RELAY_AUDIO_DIR": str(tmp_path / "audio")}
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            return subprocess.Popen([CLI, *self.args], env=self.env, stderr=log, stdout=log)

    def restart(self) -> None:
        self.process = self._start()

    def logged(self, text: str) -> bool:
        return text in self.log.read_text()

    def up(self) -> bool:
        try:
            return httpx.get(f"{self.url}/xrpc/_health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def uris(self) -> set[str]:
        """Every track the replica serves, paged through."""
        found, cursor = set(), None
        while True:
            params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            body = httpx.get(self.url + FEED, params=params, timeout=10).json()
            found.update(track["uri"] for track in body["tracks"])
            if "cursor" not in body:
                return found
            cursor = body["cursor"]

    def kill(self, sig: int = signal.SIGKILL) -> int:
        self.process.send_signal(sig)
        return self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill(signal.SIGTERM)


def environment(database_url: str, jetstream: JetstreamServer, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "R2_"))}
    return clean | {
        "RELAY_DATABASE_URL": database_url,
        "RELAY_JETSTREAM_URLS": jetstream.url,
        "RELAY_ALLOW_INSECURE": "true",
        "RELAY_PLC_URL": "http://127.0.0.1:9",
        "RELAY_BATCH_SIZE": "500",
        "RELAY_BATCH_SECONDS": "0.05",
        "RELAY_BACKOFF_MAX_SECONDS": "0.5",
        "RELAY_LOG_LEVEL": "INFO",
        "RELAY_VERIFY_RECORDS": "false",  # synthetic streams: no PDS holds these records
    } | NO_BACKFILL | extra


def visible(database_url: str) -> set[str]:
    store = PgStore(database_url, read_only=True)
    try:
        rows = snapshot(store, with_audio=True)
    finally:
        store.close()
    return {f"at://{row[0]}/app.relay.track/{row[1]}" for row in rows if row[-1] == "verified" and not row[4] and not row[5]}


async def test_an_indexer_and_two_replicas_serve_the_same_index_and_each_others_publishes(
    tmp_path: Path, pg_url: str, audio_server: AudioServer, local_pds: LocalPds
) -> None:
    events = list(synthetic_track_events(1500, audio_base_url="", accounts=40, seed=21))
    for i, event in enumerate(events):
        if "record" in event["commit"]:
            event["commit"]["record"]["audioUrl"] = audio_server.url(f"/audio/{i % 8}.mp3")
    async with JetstreamServer() as jetstream:
        env = environment(pg_url, jetstream, RELAY_PLC_URL=local_pds.plc_url)
        services = [Service(tmp_path, "indexer", ["serve"], env)]
        services += [Service(tmp_path, f"replica{n}", ["serve", "--no-index"], env) for n in (1, 2)]
        try:
            await eventually(lambda: all(s.up() for s in services), 60)
            await eventually(lambda: bool(jetstream.connections), 30)
            jetstream.append(events)  # live: a new index starts at the live edge
            await eventually(lambda: len(visible(pg_url)) > 1000 and audio_server.hits["/audio/7.mp3"] > 0, 60)
            expected = visible(pg_url)
            indexer, one, two = services
            await eventually(lambda: one.uris() == two.uris() == indexer.uris() == visible(pg_url), 30)
            assert len(expected) > 1000

            account = local_pds.create_account("scale")
            with httpx.Client(base_url=one.url, timeout=60) as client:
                response = client.post(
                    "/xrpc/app.relay.track.publish",
                    data={"title": "Across Replicas", "artist": "The Fixtures"},
                    files={"audio": ("tone.mp3", (DATA / "tone-3s.mp3").read_bytes(), "audio/mpeg")},
                    headers=account.auth_headers,
                )
            assert response.status_code == 200, response.text
            published, uri = time.monotonic(), response.json()["uri"]
            track = f"{two.url}/xrpc/app.relay.track.getTrack"
            await eventually(lambda: httpx.get(track, params={"uri": uri}).status_code == 200, 5)
            assert time.monotonic() - published < 1.0  # visible on the other replica within a second
            assert httpx.get(track, params={"uri": uri}).json()["track"]["title"] == "Across Replicas"
        finally:
            for service in services:
                service.stop()


async def test_kill_9_the_indexer_and_the_standby_takes_over_equal_to_a_clean_run(
    tmp_path: Path, pg_url: str, audio_server: AudioServer
) -> None:
    events = make_events(audio_server)
    async with JetstreamServer(events) as jetstream:
        env = environment(pg_url, jetstream, RELAY_BATCH_SIZE="1000")
        first = Service(tmp_path, "first", ["replay", "--cursor", str(events[0]["time_us"])], env)
        await eventually(lambda: bool(jetstream.connections) and jetstream.connections[0].sent > 2000, 60)
        standby = Service(tmp_path, "standby", ["index"], env)
        try:
            await eventually(lambda: standby.logged("standby: another indexer holds the writer lock"), 30)
            await eventually(lambda: jetstream.connections[0].sent >= len(events) // 2, 60)
            assert first.kill() == -signal.SIGKILL
            await eventually(lambda: standby.logged("took over the writer lock"), 15)
            await eventually(lambda: audio_server.hits["/audio/sentinel.mp3"] >= 1, 60)
            await asyncio.sleep(1.0)  # the last check's result is written (results flush every 0.25 s)
            assert standby.kill(signal.SIGTERM) == 0
        finally:
            first.stop()
            standby.stop()
    store = PgStore(pg_url)
    try:
        urls = sorted({e["commit"]["record"]["audioUrl"] for e in events if "record" in e["commit"]})
        assert snapshot(store, with_audio=True) == reference(tmp_path / "clean.duckdb", events, urls)
        assert store.cursor().time_us == events[-1]["time_us"]
    finally:
        store.close()


@pytest.fixture
def cluster() -> Any:
    found = binaries()
    if found is None:
        pytest.skip("restarting a server needs a private cluster (Debian's postgresql), not RELAY_TEST_DATABASE_URL")
    cluster = Cluster(found).start()
    yield cluster
    cluster.remove()


class Load(threading.Thread):
    """Requests to every service, as fast as they answer, recording (time, status) until stopped."""

    def __init__(self, services: list[Service]) -> None:
        super().__init__(daemon=True)
        self.services = services
        self.answers: list[tuple[float, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.halt.is_set():
                for service in self.services:
                    for path in (FEED, "/xrpc/_health", "/"):
                        try:
                            status = client.get(service.url + path).status_code
                        except httpx.TransportError:
                            status = 0
                        self.answers.append((time.monotonic(), status))


async def test_restarting_postgresql_under_load_costs_503s_during_the_outage_only(
    tmp_path: Path, cluster: Cluster, audio_server: AudioServer
) -> None:
    url = cluster.database_url("postgres")
    events = make_events(audio_server)
    async with JetstreamServer() as jetstream:
        env = environment(url, jetstream, RELAY_BATCH_SIZE="200")
        services = [Service(tmp_path, "indexer", ["serve"], env), Service(tmp_path, "replica", ["serve", "--no-index"], env)]
        load = Load(services)
        try:
            await eventually(lambda: all(s.up() for s in services), 60)
            await eventually(lambda: bool(jetstream.connections), 30)
            load.start()
            feeding = asyncio.create_task(trickle(jetstream, events, per_second=4000))
            await asyncio.sleep(3.0)
            down = time.monotonic()
            await asyncio.to_thread(cluster.stop)
            await asyncio.sleep(2.0)
            await asyncio.to_thread(cluster.start)
            back = time.monotonic()
            await feeding
            await eventually(lambda: audio_server.hits["/audio/sentinel.mp3"] >= 1, 90)
            await asyncio.sleep(1.0)
            await eventually(lambda: services[1].uris() == visible(url), 30)
        finally:
            load.halt.set()
            for service in services:
                service.stop()
    load.join(10)
    statuses = Counter(status for _, status in load.answers)
    assert set(statuses) <= {200, 503}, statuses  # no 500, no refused connection
    late = [(t - back, status) for t, status in load.answers if status == 503 and not down <= t <= back + 2.0]
    assert late == [], late[:5]
    assert statuses[503] > 0 and statuses[200] > 100
    store = PgStore(url)
    try:
        urls = sorted({e["commit"]["record"]["audioUrl"] for e in events if "record" in e["commit"]})
        assert snapshot(store, with_audio=True) == reference(tmp_path / "clean.duckdb", events, urls)
    finally:
        store.close()


async def trickle(jetstream: JetstreamServer, events: list[dict[str, Any]], per_second: int) -> None:
    step = per_second // 20
    for start in range(0, len(events), step):
        jetstream.append(events[start : start + step])
        await asyncio.sleep(0.05)


async def test_a_replica_restarted_or_cut_off_mid_stream_catches_up(
    tmp_path: Path, pg_url: str, audio_server: AudioServer
) -> None:
    events = make_events(audio_server)
    async with JetstreamServer() as jetstream:
        env = environment(pg_url, jetstream)
        indexer = Service(tmp_path, "indexer", ["index"], env)
        replica = Service(tmp_path, "replica", ["serve", "--no-index"], env)
        try:
            await eventually(lambda: replica.up() and bool(jetstream.connections), 60)
            feeding = asyncio.create_task(trickle(jetstream, events, per_second=8000))
            await asyncio.sleep(1.0)
            replica.kill()
            await asyncio.sleep(0.5)
            replica.restart()
            await eventually(replica.up, 60)
            with psycopg.connect(pg_url, autocommit=True) as admin:  # cut its signals, as a network cut would
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
            await feeding
            await eventually(lambda: audio_server.hits["/audio/sentinel.mp3"] >= 1, 60)
            await eventually(lambda: replica.uris() == visible(pg_url), 30)
            assert replica.logged("lost the change signals; reconnecting")
        finally:
            indexer.stop()
            replica.stop()
