#!/usr/bin/env python
"""Ingest benchmark: our consumer against a naive one and the loopback ceiling, in one run.

A local Jetstream v1 server (its own process, like a remote host) replays N app.relay.track commits
(mostly creates, some updates and deletes, a Zipf-like spread of accounts). Measured, side by side:
  ours     the Indexer's path: a feed process (Consumer + planner with lexicon validation + staging) and
           the Writer (batched DuckDB upserts with the cursor) into a fresh file, plain JSON and zstd frames
  naive    one INSERT ... ON CONFLICT and one commit per event, written below (run on the first --naive events)
  ceiling  websocket receive + orjson parse only
Audio checks: our AudioChecker + work queue + store writes, against a bare httpx HEAD loop at the same
concurrency, both against a local audio server in its own process.

    .venv/bin/python scripts/bench_ingest.py            # 200,000 events, 5,000 audio checks
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb
import httpx
import orjson
import websockets

from indexer.config import Settings
from indexer.db.duckdb_store import DuckDBStore as Store
from indexer.db.store import Store as StoreApi
from indexer.db.writer import Writer
from indexer.ingest.feed import Ack, Feed, Start
from indexer.ingest.workqueue import WorkQueue
from indexer.net.audio_check import AudioChecker
from indexer.runtime import tune_for_ingest

SEED = 2026


def _jetstream_host(n: int, audio_base: str, ready: mp.Queue, stop: mp.Event) -> None:
    from tests.servers.events import synthetic_track_events
    from tests.servers.jetstream import JetstreamServer

    async def main() -> None:
        events = list(synthetic_track_events(n, audio_base_url=audio_base, accounts=5000, seed=SEED))
        async with JetstreamServer(events) as server:
            ready.put((server.url, events[-1]["time_us"], _mix(events)))
            while not stop.is_set():
                await asyncio.sleep(0.1)

    asyncio.run(main())


def _audio_host(ready: mp.Queue, stop: mp.Event) -> None:
    from tests.servers.audio import AudioServer

    with AudioServer() as server:
        ready.put(server.base_url)
        stop.wait()


def _mix(events: list[dict]) -> dict[str, int]:
    mix: dict[str, int] = {}
    for event in events:
        op = event["commit"]["operation"]
        mix[op] = mix.get(op, 0) + 1
    mix["accounts"] = len({event["did"] for event in events})
    return mix


def _settings(url: str, **variables: str) -> Settings:
    env = {"RELAY_JETSTREAM_URLS": url, "RELAY_JETSTREAM_COMPRESS": "false", "RELAY_ALLOW_INSECURE": "true",
           "RELAY_BACKFILL_URLS": "", "RELAY_BACKFILL": "false"}  # never the public relay
    return Settings.from_env({**env, **variables}, env_file="/nonexistent")


async def bench_ours(url: str, last_us: int, db: Path | StoreApi, compress: bool) -> tuple[float, float]:
    """The Indexer's ingest path: a feed process (receive, parse, validate, plan, stage) and this process's
    writer, acknowledging each batch. The clock starts once the feed process is up (imports done).
    `db`: a DuckDB file to create, or a fresh store of any backend (scripts/bench_scale.py's PostgreSQL).
    Returns events/s and the feed process's peak RSS in MB."""
    tune_for_ingest()  # as the Indexer does
    store = Store(db) if isinstance(db, Path) else db
    writer = Writer(store)
    start = Start(_settings(url, RELAY_JETSTREAM_COMPRESS=str(compress).lower()), 0, False, set(), 86_400_000_000)
    applied = 0
    starting = time.perf_counter()
    async with Feed(start) as feed:
        began = time.perf_counter()
        async for shipped in feed:
            await writer.apply(shipped.batch, shipped.source)
            feed.ack(Ack(committed=True))
            applied += shipped.events
            if shipped.batch.cursor is not None and shipped.batch.cursor >= last_us:
                break
        elapsed = time.perf_counter() - began
        feed_peak_mb = _peak_rss_mb(feed.pid)
        feed.stop()
        async for _ in feed:  # what it held when stopped
            feed.ack(Ack(committed=False))
    writer.close()
    rows = sum(store.status(0)["tracks"].values())
    store.close()
    print(
        f"  ours{' (compress=true)' if compress else ''}: {applied} events in {elapsed:.2f}s, {rows} rows "
        f"(feed process started in {began - starting:.2f}s)"
    )
    return applied / elapsed, feed_peak_mb


def _peak_rss_mb(pid: int | None) -> float:
    """VmHWM, not getrusage(RUSAGE_CHILDREN): a spawned child's ru_maxrss keeps the RSS of the parent it
    was forked from before exec, which would count this process twice."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


NAIVE_UPSERT = """
INSERT INTO tracks (did, rkey, rev, cid, deleted, hidden, title, artist, album, audio_url, file_type, duration,
                    created_at, created_us, indexed_us, sort_us, audio_state, event_time_us)
VALUES (?, ?, ?, ?, ?, false, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 'pending', ?)
ON CONFLICT (did, rkey) DO UPDATE SET rev = excluded.rev, cid = excluded.cid, deleted = excluded.deleted,
    title = excluded.title, artist = excluded.artist, album = excluded.album, audio_url = excluded.audio_url,
    file_type = excluded.file_type, duration = excluded.duration, created_at = excluded.created_at
WHERE excluded.rev > tracks.rev
"""


def _replay(url: str) -> websockets.asyncio.client.connect:
    # No keepalive: the naive loop blocks the event loop for long stretches, by design.
    return websockets.connect(f"{url}?wantedCollections=app.relay.track&cursor=0", max_size=None, ping_interval=None)


async def bench_naive(url: str, db: Path, limit: int) -> float:
    Store(db).close()  # same schema as ours
    con = duckdb.connect(str(db))
    count = 0
    start = time.perf_counter()
    async with _replay(url) as ws:
        async for message in ws:
            event = orjson.loads(message)
            body = event["commit"]
            record = body.get("record") or {}
            con.execute(
                NAIVE_UPSERT,
                [event["did"], body["rkey"], body["rev"], body.get("cid"), body["operation"] == "delete",
                 record.get("title"), record.get("artist"), record.get("album"), record.get("audioUrl"),
                 record.get("fileType"), record.get("duration"), record.get("createdAt"), event["time_us"]],
            )  # autocommit: one transaction per event
            count += 1
            if count == limit:
                break
    elapsed = time.perf_counter() - start
    con.close()
    print(f"  naive: {count} events in {elapsed:.2f}s")
    return count / elapsed


async def bench_ceiling(url: str, total: int) -> float:
    count = 0
    start = time.perf_counter()
    async with _replay(url) as ws:
        async for message in ws:
            orjson.loads(message)
            count += 1
            if count == total:
                break
    elapsed = time.perf_counter() - start
    print(f"  ceiling: {count} events in {elapsed:.2f}s")
    return count / elapsed


async def bench_audio_ours(urls: list[str], db: Path, concurrency: int) -> float:
    settings = Settings.from_env(
        {"RELAY_ALLOW_INSECURE": "true", "RELAY_AUDIO_CONCURRENCY": str(concurrency)}, env_file="/nonexistent"
    )
    store = Store(db)
    writer = Writer(store)
    async with AudioChecker(settings.audio, settings.net) as checker:
        queue = WorkQueue("audio", checker.check, writer.record_audio, concurrency=concurrency)
        runner = asyncio.create_task(queue.run())
        start = time.perf_counter()
        queue.submit(urls)
        await queue.join()
        elapsed = time.perf_counter() - start
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    writer.close()
    verified = store.reader().execute("SELECT count(*) FROM audio_checks WHERE state = 'verified'").fetchone()[0]
    store.close()
    print(f"  audio ours: {verified} verified of {len(urls)} in {elapsed:.2f}s")
    assert verified == len(urls), "every check must verify against the local server"
    return verified / elapsed


async def bench_audio_bare(urls: list[str], concurrency: int) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    ok = 0
    async with httpx.AsyncClient(limits=limits, trust_env=False) as client:

        async def head(url: str) -> None:
            nonlocal ok
            async with gate:
                if (await client.head(url)).status_code == 200:
                    ok += 1

        start = time.perf_counter()
        await asyncio.gather(*(head(url) for url in urls))
        elapsed = time.perf_counter() - start
    print(f"  audio bare httpx: {ok} of {len(urls)} in {elapsed:.2f}s")
    return ok / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--naive", type=int, default=3_000, help="events the naive consumer is timed on (~150/s)")
    parser.add_argument("--checks", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3, help="runs of ours and of the ceiling (medians reported)")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    audio_ready: mp.Queue = ctx.Queue()
    audio = ctx.Process(target=_audio_host, args=(audio_ready, stop), daemon=True)
    audio.start()
    audio_base = audio_ready.get(timeout=60)
    js_ready: mp.Queue = ctx.Queue()
    host = ctx.Process(target=_jetstream_host, args=(args.events, f"{audio_base}/audio/", js_ready, stop), daemon=True)
    host.start()
    url, last_us, mix = js_ready.get(timeout=300)
    print(f"replaying {args.events} events {mix} from {url}")

    async def run() -> dict[str, float]:
        with tempfile.TemporaryDirectory() as tmp:
            # One warm-up (imports, page cache), then ours and the ceiling interleaved, --runs times each, so
            # that drift in the machine's speed falls on both alike; each figure is the median of its runs.
            await bench_ours(url, last_us, Path(tmp) / "warmup.duckdb", compress=False)
            ours_runs, ceiling_runs, feed_peaks = [], [], []
            for i in range(args.runs):
                rate, feed_peak = await bench_ours(url, last_us, Path(tmp) / f"ours{i}.duckdb", compress=False)
                ours_runs.append(rate)
                feed_peaks.append(feed_peak)
                ceiling_runs.append(await bench_ceiling(url, args.events))
            ours, ceiling = statistics.median(ours_runs), statistics.median(ceiling_runs)
            # The indexer is this process (writer, bench harness) and its feed process.
            peaks = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, max(feed_peaks))
            peak_rss_mb = sum(peaks)
            print(f"  peak RSS: indexing process {peaks[0]:.0f} MB, feed process {peaks[1]:.0f} MB")
            ours_zstd, _ = await bench_ours(url, last_us, Path(tmp) / "ours_zstd.duckdb", compress=True)
            naive = await bench_naive(url, Path(tmp) / "naive.duckdb", args.naive)
            urls = [f"{audio_base}/audio/{i:06d}.mp3" for i in range(args.checks)]
            bare = await bench_audio_bare(urls, args.concurrency)
            checks = await bench_audio_ours(urls, Path(tmp) / "audio.duckdb", args.concurrency)
        return {
            "events_per_s": round(ours),
            "events_per_s_compressed": round(ours_zstd),
            "naive_events_per_s": round(naive),
            "ceiling_events_per_s": round(ceiling),
            "audio_checks_per_s": round(checks),
            "httpx_head_per_s": round(bare),
            "peak_rss_mb": round(peak_rss_mb, 1),
        }

    try:
        figures = asyncio.run(run())
    finally:
        stop.set()
        host.join(timeout=10)
        audio.join(timeout=10)
    ours = figures["events_per_s"]
    print(
        f"ours {ours:,} ev/s ({figures['events_per_s_compressed']:,} with zstd) | "
        f"naive {figures['naive_events_per_s']:,} ev/s ({ours / figures['naive_events_per_s']:.0f}x) | "
        f"ceiling {figures['ceiling_events_per_s']:,} ev/s ({ours / figures['ceiling_events_per_s']:.0%}) | "
        f"audio {figures['audio_checks_per_s']:,}/s vs bare httpx {figures['httpx_head_per_s']:,}/s "
        f"({figures['audio_checks_per_s'] / figures['httpx_head_per_s']:.2f}x) | peak RSS {figures['peak_rss_mb']} MB"
    )
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    main()
