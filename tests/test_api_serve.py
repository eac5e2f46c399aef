"""`serve` as a real process: it answers, and on SIGTERM it stops serving, then stops and awaits the indexer."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from indexer.db.duckdb_store import DuckDBStore
from tests.builders import NO_BACKFILL
from tests.servers.events import synthetic_track_events
from tests.servers.jetstream import JetstreamServer
from tests.waiting import eventually

pytestmark = pytest.mark.slow  # end to end: real processes and servers

ROOT = Path(__file__).resolve().parent.parent

# A stand-in with the indexer's interface that records, in the shared database, that it was flushed after
# the API stopped: what the real one must be able to rely on.
_WITH_INDEXER = """
import asyncio, sys
from appview_api.server import serve
from indexer.config import Settings
from indexer.db.duckdb_store import DuckDBStore
from indexer.ingest.index import Index

class Recorder:
    def __init__(self, store):
        self.store, self.stopped = store, asyncio.Event()
    async def run(self):
        self.store.set_meta("indexer", "running")
        await self.stopped.wait()
        self.store.set_meta("indexer", "flushed")
    def stop(self):
        self.stopped.set()
    def status(self):
        return {"jetstream": "ws://127.0.0.1:9/subscribe", "audioChecksOutstanding": 3}

settings = Settings.from_env({"RELAY_DB_PATH": sys.argv[1], "RELAY_PORT": sys.argv[2]}, env_file="/nonexistent")
store = DuckDBStore(sys.argv[1])
asyncio.run(serve(settings, Index(store, max_future_us=0), indexer=Recorder(store)))
store.close()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(port: int, proc: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            return httpx.get(f"http://127.0.0.1:{port}/xrpc/_health").json()
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("server did not come up")


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "R2_"))}
    return clean | {"PYTHONPATH": str(ROOT), "RELAY_LOG_LEVEL": "INFO"} | NO_BACKFILL


def test_serve_no_index_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    port, db = free_port(), tmp_path / "serve.duckdb"
    cli = [str(Path(sys.executable).with_name("relay-appview")), "serve", "--no-index", "--db", str(db)]
    proc = subprocess.Popen([*cli, "--port", str(port)], cwd=tmp_path, env=env(), stderr=subprocess.PIPE, text=True)
    try:
        assert wait_healthy(port, proc)["version"] == "0.1.0"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "serve stopped" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_serve_stops_and_awaits_the_indexer_on_sigterm(tmp_path: Path) -> None:
    port, db = free_port(), tmp_path / "serve.duckdb"
    script = [sys.executable, "-c", _WITH_INDEXER, str(db), str(port)]
    proc = subprocess.Popen(script, cwd=tmp_path, env=env(), stderr=subprocess.PIPE, text=True)
    try:
        health = wait_healthy(port, proc)
        assert health["indexer"] == {"jetstream": "ws://127.0.0.1:9/subscribe", "audioChecksOutstanding": 3}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()
    store = DuckDBStore(db)
    try:
        assert store.meta("indexer") == "flushed"
    finally:
        store.close()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="mounting needs root and unshare")
async def test_health_is_503_once_writes_have_failed_past_the_grace_period(tmp_path: Path) -> None:
    """A real full disk: the database lives on a 3 MB tmpfs, mounted in a mount namespace of the server's own."""
    disk = tmp_path / "disk"
    disk.mkdir()
    events = list(synthetic_track_events(40_000, audio_base_url="https://audio.example", accounts=50, seed=3))
    async with JetstreamServer() as jetstream:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "R2_"))} | {
            "RELAY_JETSTREAM_URLS": jetstream.url,
            "RELAY_PLC_URL": "http://127.0.0.1:9",
            "RELAY_HEALTH_WRITE_GRACE_SECONDS": "1",
            "RELAY_VERIFY_RECORDS": "false",  # synthetic records no PDS holds: proofs would only add churn
            "RELAY_BATCH_SIZE": "500",
            "RELAY_LOG_LEVEL": "WARNING",
        } | NO_BACKFILL
        script = (
            f"mount -t tmpfs -o size=3m tmpfs {disk} && exec {sys.executable} -m appview_api.cli serve "
            f"--db {disk}/relay.duckdb --port {port}"
        )
        proc = subprocess.Popen(["unshare", "-m", "sh", "-c", script], env=env, stderr=subprocess.PIPE, text=True)
        try:
            await asyncio.to_thread(wait_healthy, port, proc)  # off the loop: the Jetstream server runs on it
            await eventually(lambda: bool(jetstream.connections), timeout=30)
            jetstream.append(events)  # live events: a service with no cursor yet starts at the live edge
            deadline = time.monotonic() + 120
            while True:
                health = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/xrpc/_health")
                if health.status_code == 503 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
    body = health.json()
    assert health.status_code == 503, body
    assert body["error"] == "WritesFailing"
    assert body["message"].startswith("every write for ")
    assert "No space left on device" in body["message"]
