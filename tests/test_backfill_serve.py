"""The backfill in a real `serve` process: killed (-9) mid-sync and started again, nothing is lost or doubled;
and the CLI steering the running service through the admin API (status, backfill, replay), refused with a
wrong or missing token. The database stays the service's: the CLI never opens it while `serve` runs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from indexer.db.duckdb_store import DuckDBStore
from tests.fixtures.pds import LocalPds
from tests.pds_writes import Repo, rkey_of
from tests.servers.audio import AudioServer
from tests.servers.jetstream import JetstreamServer
from tests.servers.pds_proxy import PdsProxy
from tests.servers.relay import LoopbackRelay
from tests.test_api_serve import free_port

pytestmark = pytest.mark.slow  # end to end: real processes and servers

CLI = str(Path(sys.executable).with_name("relay-appview"))
TOKEN = "t" * 40
GET_REPO = "com.atproto.sync.getRepo"


def environment(db: Path, port: int, jetstream: JetstreamServer, proxy: PdsProxy, relay: LoopbackRelay, pds: LocalPds) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "R2_"))}
    return clean | {
        "RELAY_DB_PATH": str(db),
        "RELAY_PORT": str(port),
        "RELAY_JETSTREAM_URLS": jetstream.url,
        "RELAY_PLC_URL": proxy.url,
        "RELAY_DNS_NAMESERVERS": pds.nameserver,
        "RELAY_ALLOW_INSECURE": "true",
        "RELAY_BACKFILL": "true",
        "RELAY_BACKFILL_URLS": relay.url,
        "RELAY_BACKFILL_RETRY_SECONDS": "0.2",
        "RELAY_ADMIN_TOKEN": TOKEN,
        "RELAY_LOG_LEVEL": "INFO",
    }


async def health(port: int, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "serve exited"
            try:
                return dict((await client.get(f"http://127.0.0.1:{port}/xrpc/_health")).json())
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise AssertionError("serve did not come up")


async def until(port: int, proc: subprocess.Popen[bytes], check: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = await health(port, proc)
        if check(body):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, [CLI, *args], env=env, capture_output=True, text=True, timeout=60)


async def test_killed_mid_sync_then_steered_by_the_cli(
    tmp_path: Path, audio_server: AudioServer, local_pds: LocalPds
) -> None:
    repos = [Repo(local_pds, local_pds.create_account("served"), audio_server) for _ in range(3)]
    tracks = {repo.did: [repo.create(f"Served {n}") for n in range(4)] for repo in repos}
    db, port = tmp_path / "relay.duckdb", free_port()
    with PdsProxy(local_pds.pds_url, local_pds.plc_url) as proxy, LoopbackRelay(local_pds.pds_url) as relay:
        relay.only = {repo.did for repo in repos}
        async with JetstreamServer() as jetstream:
            env = environment(db, port, jetstream, proxy, relay, local_pds)
            proxy.delays[GET_REPO] = 3.0  # slow enough to be killed mid-sync
            proc = subprocess.Popen([CLI, "serve"], env=env, stderr=subprocess.DEVNULL)
            try:
                await until(port, proc, lambda b: b.get("backfill", {}).get("syncing", 0) > 0)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                proxy.delays.clear()
                proc = subprocess.Popen([CLI, "serve"], env=env, stderr=subprocess.DEVNULL)
                done = await until(port, proc, lambda b: b.get("backfill", {}).get("synced") == 3)
                assert done["backfill"] == {
                    "total": 3, "done": 3, "synced": 3, "failed": 0, "inactive": 0, "pending": 0, "syncing": 0,
                    "records": 12,
                }
                metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
                assert 'relay_backfill_accounts{state="synced"} 3.0' in metrics

                status = await cli(env, "status", "--json")  # the service holds the file: asked over HTTP
                assert status.returncode == 0, status.stderr
                report = orjson.loads(status.stdout)
                assert report["progress"]["synced"] == 3 and report["backfill"]["syncs"] == {"synced": 3}
                assert report["backfill"]["discovery"][0]["repos"] == 3
                text = await cli(env, "status")
                assert "backfill: 3 of 3 accounts done (synced 3, failed 0, inactive 0; pending 0, syncing 0), 12 tracks" in text.stdout

                fetched = proxy.calls.count(GET_REPO)
                one = await cli(env, "backfill", "--did", repos[0].did)
                assert one.returncode == 0, one.stderr
                assert "syncs 1 accounts" in one.stdout
                assert "synced 1 of 1 accounts (4 tracks)" in one.stdout
                assert proxy.calls.count(GET_REPO) == fetched + 1

                cursor = str(time.time_ns() // 1000 - 3_600_000_000)
                replay = await cli(env, "replay", "--cursor", cursor)
                assert replay.returncode == 0, replay.stderr
                assert f"replays from cursor {cursor}" in replay.stdout

                wrong = await cli(env | {"RELAY_ADMIN_TOKEN": "w" * 40}, "status")
                assert wrong.returncode == 2
                assert "refused app.relay.admin.getStatus: AuthRequired: the admin token is wrong" in wrong.stderr
                unset = await cli({k: v for k, v in env.items() if k != "RELAY_ADMIN_TOKEN"}, "backfill", "--all")
                assert unset.returncode == 2 and "set RELAY_ADMIN_TOKEN" in unset.stderr
                bare = httpx.get(f"http://127.0.0.1:{port}/xrpc/app.relay.admin.getStatus")
                assert bare.status_code == 401 and bare.json()["error"] == "AuthRequired"
                assert httpx.post(
                    f"http://127.0.0.1:{port}/xrpc/app.relay.admin.replay", json={"cursor": 1},
                    headers={"authorization": "Bearer " + "w" * 40},
                ).status_code == 401
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    store = DuckDBStore(db, read_only=True)
    try:
        found = store.reader().execute("SELECT did, rkey, title, proof, deleted FROM tracks ORDER BY did, rkey").fetchall()
        assert found == sorted(
            (did, rkey_of(e), e["commit"]["record"]["title"], "proven", False) for did, events in tracks.items() for e in events
        )
        assert store.reader().execute("SELECT count(*) FROM rejections").fetchall() == [(0,)]
        assert store.cursor() is not None and store.cursor().source == "replay"  # type: ignore[union-attr]
    finally:
        store.close()
