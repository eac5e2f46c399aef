"""Benchmark the backfill: 100 accounts × 50 tracks plus 200 records of another collection each.

    .venv/bin/python scripts/bench_backfill.py [--accounts 100] [--tracks 50] [--others 200] [--concurrency 8]

Everything is real and on loopback: the reference PDS and PLC (tests/pds/start.mjs, as the tests start them)
hold the repositories; a local audio host answers the tracks' audio; the test relay (tests/servers/relay.py)
lists the accounts from the PDS. The service runs as its own process (`relay-appview serve`, proofs on, the
whole PDS one host, so RELAY_BACKFILL_PER_HOST is the concurrency too): discovery through the relay, then
every repository fetched, proven (hashes, signature, tree) and written; timed from its first health answer
to every account synced, and its peak RSS read from the kernel (VmHWM). Then a bare loop over the same
accounts at the same concurrency: getRepo and a CAR parse (libipld), nothing checked, nothing stored. The
last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import libipld

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.pds import LocalPds, PdsAccount, running_pds  # noqa: E402
from tests.servers.audio import AudioServer  # noqa: E402
from tests.servers.events import track_record  # noqa: E402
from tests.servers.relay import LoopbackRelay  # noqa: E402
from tests.test_api_serve import free_port  # noqa: E402

CLI = str(Path(sys.executable).with_name("relay-appview"))
TRACK, OTHER = "app.relay.track", "app.relay.note"


def fill(pds: LocalPds, audio: AudioServer, count: int, tracks: int, others: int) -> list[PdsAccount]:
    accounts = []
    for n in range(count):
        account = pds.create_account(f"bench{n}")
        writes = [
            {"$type": "com.atproto.repo.applyWrites#create", "collection": TRACK,
             "value": track_record(f"Track {n}-{i}", "Bench", audio.url(f"/audio/{n}-{i}.mp3"))}
            for i in range(tracks)
        ] + [
            {"$type": "com.atproto.repo.applyWrites#create", "collection": OTHER,
             "value": {"$type": OTHER, "text": f"{i}"}}
            for i in range(others)
        ]
        for start in range(0, len(writes), 200):
            response = httpx.post(
                f"{pds.pds_url}/xrpc/com.atproto.repo.applyWrites",
                json={"repo": account.did, "writes": writes[start : start + 200]},
                headers=account.auth_headers, timeout=60,
            )
            response.raise_for_status()
        accounts.append(account)
    return accounts


def cpu_seconds(pid: int) -> float:
    """User and system CPU a process has used so far (the node PDS's: its share of each phase)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def full_backfill(
    pds: LocalPds, relay: LoopbackRelay, workdir: Path, accounts: int, concurrency: int
) -> tuple[float, float, float, int]:
    """Seconds from the service's first health answer to every account synced, and from the relay's listing
    done to every account synced; the service's peak RSS; tracks."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "R2_"))} | {
        "PYTHONPATH": str(ROOT),
        "RELAY_DB_PATH": str(workdir / "relay.duckdb"),
        "RELAY_PORT": str(port),
        "RELAY_JETSTREAM_URLS": "ws://127.0.0.1:9/subscribe",  # no stream: everything comes from the repositories
        "RELAY_PLC_URL": pds.plc_url,
        "RELAY_DNS_NAMESERVERS": pds.nameserver,
        "RELAY_ALLOW_INSECURE": "true",
        "RELAY_BACKFILL_URLS": relay.url,
        "RELAY_BACKFILL_CONCURRENCY": str(concurrency),
        "RELAY_BACKFILL_PER_HOST": str(concurrency),
    }
    env["RELAY_LOG_LEVEL"] = os.environ.get("BENCH_LOG_LEVEL", "WARNING")
    env.update(item.split("=", 1) for item in os.environ.get("BENCH_EXTRA", "").split(";") if item)
    process = subprocess.Popen([CLI, "serve"], env=env, cwd=workdir)
    try:
        started = listed = None
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/xrpc/_health", timeout=5).json()
            except httpx.TransportError:
                time.sleep(0.02)
                continue
            started = started or time.perf_counter()
            counts = health.get("backfill", {})
            if listed is None and counts.get("total") and health["indexer"]["discovering"] is None:
                listed = time.perf_counter()
            if counts.get("synced", 0) + counts.get("failed", 0) + counts.get("inactive", 0) >= accounts:
                finished = time.perf_counter()
                elapsed = finished - started
                break
            time.sleep(0.1)  # each look costs the service a read: not so often that it is the load
        assert counts["synced"] == accounts, counts
        assert listed is not None
        print(f"service CPU {cpu_seconds(process.pid):.2f}s (all threads, from its start)", file=sys.stderr)
        return elapsed, finished - listed, peak_rss_mb(process.pid), counts["records"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


async def bare_loop(pds: LocalPds, dids: list[str], concurrency: int) -> tuple[float, int]:
    """getRepo and a CAR parse for each account, `concurrency` at a time: seconds, tracks seen."""
    slots = asyncio.Semaphore(concurrency)
    seen = 0

    async def one(client: httpx.AsyncClient, did: str) -> None:
        nonlocal seen
        async with slots:
            response = await client.get(f"{pds.pds_url}/xrpc/com.atproto.sync.getRepo", params={"did": did})
            _, blocks = libipld.decode_car(response.content)
            seen += sum(1 for block in blocks.values() if isinstance(block, dict) and block.get("$type") == TRACK)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits, trust_env=False) as client:
        started = time.perf_counter()
        await asyncio.gather(*(one(client, did) for did in dids))
        return time.perf_counter() - started, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--tracks", type=int, default=50)
    parser.add_argument("--others", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with running_pds() as pds, AudioServer() as audio, tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        made = time.perf_counter()
        accounts = fill(pds, audio, args.accounts, args.tracks, args.others)
        print(f"wrote {args.accounts} repositories in {time.perf_counter() - made:.1f}s", file=sys.stderr)
        with LoopbackRelay(pds.pds_url) as relay:
            relay.only = {a.did for a in accounts}
            node = cpu_seconds(pds.pid)
            seconds, syncing, rss, records = full_backfill(pds, relay, Path(tmp), args.accounts, args.concurrency)
            node_full = cpu_seconds(pds.pid) - node
        node = cpu_seconds(pds.pid)
        bare_seconds, bare_records = asyncio.run(bare_loop(pds, [a.did for a in accounts], args.concurrency))
        node_bare = cpu_seconds(pds.pid) - node
    figures = {
        "accounts": args.accounts,
        "records": records,
        "seconds": round(seconds, 2),
        "records_per_s": round(records / seconds, 1),
        "sync_phase_records_per_s": round(records / syncing, 1),  # after the relay's listing
        "accounts_per_s": round(args.accounts / seconds, 2),
        "bare_seconds": round(bare_seconds, 2),
        "bare_records_per_s": round(bare_records / bare_seconds, 1),
        "peak_rss_mb": round(rss, 1),
        "pds_cpu_s": round(node_full, 2),  # the PDS's (and PLC's: one node process) CPU during each
        "bare_pds_cpu_s": round(node_bare, 2),
    }
    print(
        f"backfill: {records} tracks of {args.accounts} accounts in {seconds:.2f}s: {figures['records_per_s']} "
        f"records/s, {figures['accounts_per_s']} accounts/s, peak RSS {rss:.0f} MiB; bare getRepo + CAR parse: "
        f"{figures['bare_records_per_s']} records/s ({figures['records_per_s'] / figures['bare_records_per_s']:.2f}x); "
        f"after the relay's listing: {figures['sync_phase_records_per_s']} records/s"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
