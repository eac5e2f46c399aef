"""`serve` as a real process: it answers, and on SIGTERM it stops serving, then stops and awaits the indexer."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from indexer.db.duckdb_store import DuckDBStore

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
    return clean | {"PYTHONPATH": str(ROOT), "RELAY_LOG_LEVEL": "INFO"}


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
