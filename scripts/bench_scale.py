#!/usr/bin/env python
"""Benchmark beyond one machine: one PostgreSQL database, one indexer, API replicas, on this machine.

    .venv/bin/python scripts/bench_scale.py [--tracks 1000000] [--seconds 10] [--connections 32]

Needs Debian's postgresql (a private cluster is started in a temp dir, as scripts/test does) and wrk.
1. The index: 1M tracks filled into DuckDB as bench_api.py does, then moved with `relay-appview db copy`.
2. Discovery throughput: deep `feed.getTracks` pages (thousands of signed cursors, random limits, so
   nearly every request misses the response cache) from wrk against one replica at --connections, then
   against two replicas at the same connections in all (half each, two wrk processes at once). Rounds
   alternate, one then two, and each figure is the median of its rounds.
3. Replica lag: `relay-appview index` follows a local Jetstream that sends 1,000 events/s; meanwhile this
   process publishes a track now and then through the index's own write path (`Index.ingest_local`, as a
   replica's publish does) and polls both replicas until both serve it: commit to visible everywhere.
4. Ingest into PostgreSQL next to DuckDB: bench_ingest.py's workload and path (its feed process, our
   writer), into a fresh database and a fresh file, runs interleaved, medians.
5. Each replica's peak RSS over the whole run.
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_api  # noqa: E402
import bench_ingest  # noqa: E402

from indexer.atproto import tid  # noqa: E402
from indexer.db.pg_store import PgStore  # noqa: E402
from indexer.ingest.index import Index, local_commit, stored_audio  # noqa: E402
from tests.servers.events import track_record  # noqa: E402
from tests.servers.postgres import Cluster, binaries  # noqa: E402

CLI = str(Path(sys.executable).with_name("relay-appview"))
FEED = "/xrpc/app.relay.feed.getTracks"


def _live_jetstream(rate: int, audio_base: str, ready: mp.Queue, stop: mp.Event) -> None:
    """A Jetstream host sending `rate` new events a second, live, until stopped (its own process)."""
    from tests.servers.events import synthetic_track_events
    from tests.servers.jetstream import JetstreamServer

    async def main() -> None:
        events = synthetic_track_events(10_000_000, audio_base_url=audio_base, accounts=5000, seed=99,
                                        start_time_us=time.time_ns() // 1000)
        async with JetstreamServer() as server:
            ready.put(server.url)
            tick = 0.05
            while not stop.is_set():
                now = time.time_ns() // 1000
                batch = [next(events) for _ in range(int(rate * tick))]
                for event in batch:  # live: stamped now, in order
                    event["time_us"] = now
                    now += 1
                server.append(batch)
                await asyncio.sleep(tick)

    asyncio.run(main())


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([CLI, *args], env=env, stdout=out, stderr=out)


def wrk_together(targets: list[tuple[str, list[str], int]], seconds: int, workdir: Path) -> float:
    """wrk against each (base URL, paths, connections) at once; total requests a second."""
    results: list[dict] = []
    threads = [
        threading.Thread(target=lambda t=t: results.append(bench_api.wrk(t[0], t[1], seconds, t[2], workdir)))
        for t in targets
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bad = sum(r["non2xx"] + r["errors"] for r in results)
    if bad:
        raise SystemExit(f"wrk saw {bad} failed requests: {results}")
    return sum(r["rps"] for r in results)


def deep_pages(base: str, count: int) -> list[str]:
    rnd, cursor, pages = random.Random(11), None, []
    with httpx.Client(base_url=base, timeout=30) as client:
        for _ in range(count):
            body = client.get(FEED, params={"cursor": cursor} if cursor else {}).json()
            cursor = body["cursor"]
            pages.append(f"{FEED}?limit={rnd.randint(10, 100)}&cursor={quote(cursor)}")
    return pages


def visible_everywhere(bases: list[str], uri: str) -> float:
    """Poll each replica until it serves `uri`; the time the last one did."""
    seen: list[float] = []

    def poll(base: str) -> None:
        with httpx.Client(base_url=base, timeout=10) as client:
            while client.get("/xrpc/app.relay.track.getTrack", params={"uri": uri}).status_code != 200:
                time.sleep(0.001)
        seen.append(time.monotonic())

    threads = [threading.Thread(target=poll, args=(base,)) for base in bases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    if len(seen) != len(bases):
        raise SystemExit(f"{uri} never showed on every replica")
    return max(seen)


async def measure_lag(url: str, bases: list[str], samples: int) -> list[float]:
    store = PgStore(url)
    index = Index(store, max_future_us=86_400_000_000)
    clock = tid.TidClock(clock_id=3)
    did = "did:plc:" + "l" * 24
    lags = []
    try:
        for n in range(samples):
            rkey = clock.next()
            record = track_record(f"Lag probe {n}", "Bench", f"https://cdn.example/probe/{rkey}.mp3",
                                  created_at="2026-01-01T00:00:00Z")
            commit = local_commit(did, rkey, rkey, "bafyreiprobe", record)
            await index.ingest_local(commit, stored_audio(record["audioUrl"], "audio/mpeg"), None)
            committed = time.monotonic()
            done = await asyncio.to_thread(visible_everywhere, bases, f"at://{did}/app.relay.track/{rkey}")
            lags.append((done - committed) * 1000)
            await asyncio.sleep(random.uniform(0.05, 0.25))
    finally:
        index.close()
        store.close()
    return lags


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=50_000)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of one and of two replicas")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--ingest-rate", type=int, default=1000, help="events/s while replica lag is measured")
    parser.add_argument("--lag-samples", type=int, default=200)
    parser.add_argument("--events", type=int, default=200_000, help="bench_ingest.py's workload")
    parser.add_argument("--runs", type=int, default=3, help="ingest runs per backend (medians)")
    args = parser.parse_args()
    found = binaries()
    if found is None or shutil.which("wrk") is None:
        raise SystemExit("needs PostgreSQL's server (apt-get install -y postgresql) and wrk (apt-get install -y wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    cluster = Cluster(found).start()
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    children: list[subprocess.Popen[bytes]] = []
    try:
        with psycopg.connect(cluster.url, autocommit=True) as con:
            con.execute("CREATE DATABASE bench")
        url = cluster.database_url("bench")
        started = time.monotonic()
        bench_api.fill(workdir / "bench.duckdb", args.tracks, args.accounts)
        filled = time.monotonic()
        subprocess.run([CLI, "db", "copy", "--to", url, "--db", str(workdir / "bench.duckdb")], check=True,
                       stderr=subprocess.DEVNULL)
        print(f"filled {args.tracks} tracks in {filled - started:.0f}s; db copy into PostgreSQL took "
              f"{time.monotonic() - filled:.1f}s", flush=True)

        audio_ready: mp.Queue = ctx.Queue()
        audio = ctx.Process(target=bench_ingest._audio_host, args=(audio_ready, stop), daemon=True)
        audio.start()
        audio_base = audio_ready.get(timeout=60)

        env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "R2_"))} | {
            "RELAY_DATABASE_URL": url, "RELAY_LOG_LEVEL": "WARNING", "RELAY_ALLOW_INSECURE": "true",
            "RELAY_PLC_URL": "http://127.0.0.1:9", "RELAY_AUDIO_DIR": str(workdir / "audio"),
            "RELAY_VERIFY_RECORDS": "false",  # a synthetic stream: no PDS holds its records
            "RELAY_BACKFILL_URLS": "", "RELAY_BACKFILL": "false",  # never the public relay
        }
        ports = [bench_api.free_port(), bench_api.free_port()]
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        replicas = [start(["serve", "--no-index", "--port", str(port)], env, workdir / f"replica{n}.log")
                    for n, port in enumerate(ports)]
        children += replicas
        peaks = [bench_api.PeakRss(replica.pid) for replica in replicas]
        for peak in peaks:
            peak.start()
        for base, replica in zip(bases, replicas, strict=True):
            bench_api.wait_up(f"{base}/xrpc/_health", replica)
        print(f"two replicas up in {time.monotonic() - filled:.0f}s", flush=True)

        pages = deep_pages(bases[0], min(2000, args.tracks // 100))
        one, two = [], []
        c = args.connections
        for _ in range(args.rounds):
            one.append(wrk_together([(bases[0], pages, c)], args.seconds, workdir))
            two.append(wrk_together([(bases[0], pages, c // 2), (bases[1], pages, c - c // 2)], args.seconds, workdir))
            print(f"discovery: one replica {one[-1]:,.0f} req/s, two {two[-1]:,.0f} req/s", flush=True)

        js_ready: mp.Queue = ctx.Queue()
        live = ctx.Process(target=_live_jetstream, args=(args.ingest_rate, f"{audio_base}/audio/", js_ready, stop),
                           daemon=True)
        live.start()
        indexer = start(["index", "--jetstream", js_ready.get(timeout=60)], env, workdir / "indexer.log")
        children.append(indexer)
        time.sleep(3.0)  # the indexer is following the live stream
        lags = asyncio.run(measure_lag(url, bases, args.lag_samples))
        print(f"replica lag over {len(lags)} commits: p50 {percentile(lags, 0.5):.1f} ms, "
              f"p99 {percentile(lags, 0.99):.1f} ms", flush=True)
        for child in children:
            child.send_signal(signal.SIGTERM)
            child.wait(60)
        for peak in peaks:
            peak.halt.set()

        pg_runs, duck_runs = asyncio.run(ingest(ctx, stop, args, audio_base, cluster))
    finally:
        stop.set()
        for child in children:
            if child.poll() is None:
                child.kill()
        cluster.remove()
        shutil.rmtree(workdir, ignore_errors=True)
    figures = {
        "one_replica_rps": round(statistics.median(one)),
        "two_replica_rps": round(statistics.median(two)),
        "lag_p50_ms": round(percentile(lags, 0.5), 1),
        "lag_p99_ms": round(percentile(lags, 0.99), 1),
        "pg_ingest_events_per_s": round(statistics.median(pg_runs)),
        "duckdb_ingest_events_per_s": round(statistics.median(duck_runs)),
        "replica_rss_mb": round(max(peak.peak for peak in peaks) / 2**20, 1),
    }
    print(json.dumps(figures))


async def ingest(ctx: mp.context.SpawnContext, stop: mp.Event, args: argparse.Namespace, audio_base: str,
                 cluster: Cluster) -> tuple[list[float], list[float]]:
    ready: mp.Queue = ctx.Queue()
    host = ctx.Process(target=bench_ingest._jetstream_host, args=(args.events, f"{audio_base}/audio/", ready, stop),
                       daemon=True)
    host.start()
    js_url, last_us, _ = ready.get(timeout=300)
    pg_runs, duck_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        await bench_ingest.bench_ours(js_url, last_us, Path(tmp) / "warmup.duckdb", compress=False)
        for run in range(args.runs):
            with psycopg.connect(cluster.url, autocommit=True) as con:
                con.execute(f"CREATE DATABASE ingest{run}")
            store = PgStore(cluster.database_url(f"ingest{run}"))
            pg_runs.append((await bench_ingest.bench_ours(js_url, last_us, store, compress=False))[0])
            duck_runs.append((await bench_ingest.bench_ours(js_url, last_us, Path(tmp) / f"{run}.duckdb", False))[0])
            print(f"ingest: PostgreSQL {pg_runs[-1]:,.0f} events/s, DuckDB {duck_runs[-1]:,.0f} events/s", flush=True)
    return pg_runs, duck_runs


if __name__ == "__main__":
    main()
