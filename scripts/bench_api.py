"""Benchmark the XRPC API and the web pages at scale: fill a DuckDB file, run `relay-appview serve --no-index`,
load it with wrk.

    .venv/bin/python scripts/bench_api.py [--tracks 1000000] [--accounts 50000] [--seconds 10] [--connections 8,32]

Each endpoint gets varied parameters from a Lua script (discovery's first page is one hot key on purpose;
deeper discovery pages, actors, track URIs and search queries are drawn from thousands of values, each
with a random limit from 10 to 100, so nearly every one of those requests misses the response cache). The
web pages get the same treatment: `/` (one hot page), deep `/?cursor=` pages and `/track/<did>/<rkey>`. Each
load runs at every --connections count: wrk keeps that many requests in flight, so with one server
process latency is roughly connections / throughput, and p99 is reported per count. The same load against
a bare Starlette JSON endpoint gives the ceiling. Only loopback traffic. The last line printed is one JSON
object with the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import duckdb
import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from indexer.db.duckdb_store import DuckDBStore as Store  # noqa: E402

BASE_US = 1_700_000_000_000_000
STEP_US = 30_000_000
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "so", "ta", "vi", "ze", "po", "da", "fe", "gu", "hi", "jo", "xa", "be", "wy"]

_FILL_TRACKS = """
INSERT INTO tracks (did, rkey, rev, cid, deleted, hidden, title, artist, album, audio_url, file_type, duration,
    created_at, created_us, indexed_us, sort_us, audio_state, event_time_us, changed_us, first_seen_us, proof) SELECT
    'did:plc:' || substr(md5((i % $accounts)::VARCHAR), 1, 24),
    '3' || lpad(printf('%x', i), 12, '0'), '3l', 'bafyrei' || substr(md5(i::VARCHAR || 'c'), 1, 40),
    i % 97 = 0, i % 89 = 0,
    $v[(1 + hash(i, 1) % $n)::BIGINT] || ' ' || $v[(1 + hash(i, 2) % $n)::BIGINT] || ' '
        || $v[(1 + hash(i, 3) % $n)::BIGINT],
    $v[(1 + hash(i % $accounts, 4) % $n)::BIGINT] || ' ' || $v[(1 + hash(i % $accounts, 5) % $n)::BIGINT],
    CASE WHEN i % 3 = 0 THEN NULL ELSE $v[(1 + hash(i // 7, 6) % $n)::BIGINT] END,
    'https://cdn.example/audio/' || md5(i::VARCHAR) || '.mp3', 'mp3', 60 + i % 300,
    strftime(make_timestamp($base + i * $step), '%Y-%m-%dT%H:%M:%S.000Z'),
    $base + i * $step, $base + i * $step + 5000000, $base + i * $step,
    CASE WHEN i % 83 = 0 THEN 'pending' WHEN i % 79 = 0 THEN 'unavailable' ELSE 'verified' END,
    $base + i * $step, $base + i * $step + 5000000, $base + i * $step, 'proven'
FROM range($tracks) t(i)
"""

_LUA = """
local paths = {%s}
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %%d, "seconds": %%f, "p50_us": %%d, "p99_us": %%d, "non2xx": %%d, "errors": %%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""

_CEILING = """
import sys, orjson, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
async def ok(request):
    return Response(orjson.dumps({"ok": True}), media_type="application/json")
uvicorn.run(Starlette(routes=[Route("/ok", ok)]), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False)
"""


def fill(path: Path, tracks: int, accounts: int) -> list[str]:
    """Synthetic tracks in bulk SQL (seconds, not minutes); returns the title vocabulary."""
    Store(path).close()  # the real schema and migrations
    rnd = random.Random(7)
    vocab = sorted({"".join(rnd.choice(SYLLABLES) for _ in range(rnd.randint(2, 4))) for _ in range(8000)})
    con = duckdb.connect(str(path))
    try:
        con.execute(
            "INSERT INTO accounts (did, handle, active, status, seq, first_seen_us, handle_resolved_us) "
            "SELECT 'did:plc:' || substr(md5(i::VARCHAR), 1, 24), "
            "CASE WHEN i % 10 = 0 THEN NULL ELSE 'user' || i || '.test' END, true, NULL, 0, 0, 0 "
            "FROM range($accounts) t(i)",
            {"accounts": accounts},
        )
        params = {"v": vocab, "n": len(vocab), "tracks": tracks, "accounts": accounts, "base": BASE_US}
        con.execute(_FILL_TRACKS, params | {"step": STEP_US})
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return vocab


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("server did not come up")


class PeakRss(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.05):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.NoSuchProcess:
                return


def wrk(url: str, paths: list[str], seconds: int, connections: int, workdir: Path) -> dict:
    script = workdir / f"paths{random.randrange(1 << 30)}.lua"
    script.write_text(_LUA % ",".join(json.dumps(p) for p in paths))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    return {
        "rps": round(result["requests"] / result["seconds"], 1),
        "p50_ms": round(result["p50_us"] / 1000, 2),
        "p99_ms": round(result["p99_us"] / 1000, 2),
        "non2xx": result["non2xx"],
        "errors": result["errors"],
    }


def workloads(base: str, vocab: list[str], tracks: int, accounts: int) -> dict[str, list[str]]:
    rnd = random.Random(11)
    cursors, cursor = [], None
    with httpx.Client(base_url=base) as client:
        for _ in range(2000):  # deep discovery pages, down to the 100,000th track
            body = client.get("/xrpc/app.relay.feed.getTracks", params={"cursor": cursor} if cursor else {}).json()
            cursor = body.get("cursor")
            if cursor is None:  # a small index: fewer pages
                break
            cursors.append(cursor)
    actors = []
    for _ in range(5000):
        i = rnd.randrange(accounts)
        did = "did:plc:" + _md5(str(i))[:24]
        actors.append(did if i % 10 == 0 or rnd.random() < 0.5 else f"user{i}.test")
    uris = []
    for _ in range(5000):
        i = rnd.randrange(tracks)
        uris.append(f"at://did:plc:{_md5(str(i % accounts))[:24]}/app.relay.track/3{format(i, 'x').rjust(12, '0')}")
    queries = []
    for _ in range(5000):
        words = rnd.sample(vocab, rnd.choice((1, 1, 2)))
        queries.append(" ".join(w[: rnd.randint(3, len(w))] for w in words))

    def limit() -> int:
        return rnd.randint(10, 100)

    return {
        "app.relay.feed.getTracks": ["/xrpc/app.relay.feed.getTracks"],
        "app.relay.feed.getTracks#deep": [
            f"/xrpc/app.relay.feed.getTracks?limit={limit()}&cursor={quote(c)}" for c in cursors
        ],
        "app.relay.actor.getTracks": [
            f"/xrpc/app.relay.actor.getTracks?limit={limit()}&actor={quote(a)}" for a in actors
        ],
        "app.relay.track.getTrack": [f"/xrpc/app.relay.track.getTrack?uri={quote(u, safe='')}" for u in uris],
        "app.relay.feed.searchTracks": [
            f"/xrpc/app.relay.feed.searchTracks?limit={limit()}&q={quote(q)}" for q in queries
        ],
        # The web pages: the same catalog, rendered as HTML (a page holds 25 tracks).
        "page /": ["/"],
        "page /#deep": [f"/?cursor={quote(c)}" for c in cursors],
        "page /track/…": [f"/track/{u.removeprefix('at://').replace('/app.relay.track/', '/')}" for u in uris],
    }


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=50_000)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per endpoint")
    parser.add_argument("--connections", default="8,32", help="wrk connection counts, comma-separated")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    workdir = Path(tempfile.mkdtemp(prefix="bench-api-"))
    db = workdir / "bench.duckdb"
    try:
        started = time.monotonic()
        vocab = fill(db, args.tracks, args.accounts)
        print(f"filled {args.tracks} tracks over {args.accounts} accounts in {time.monotonic() - started:.1f}s")
        results, peak = run(args, workdir, db, vocab)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{'endpoint @ connections':38} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non2xx':>7}")
    for name, r in results.items():
        print(f"{name:38} {r['rps']:>9} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['non2xx']:>7}")
    print(f"peak server RSS: {peak / 2**20:.0f} MiB")
    summary = {name: {k: r[k] for k in ("rps", "p50_ms", "p99_ms")} for name, r in results.items()}
    print(json.dumps(summary | {"peak_rss_mb": round(peak / 2**20, 1)}))


def run(args: argparse.Namespace, workdir: Path, db: Path, vocab: list[str]) -> tuple[dict, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")} | {
        "RELAY_LOG_LEVEL": "WARNING", "RELAY_BACKFILL_URLS": "", "RELAY_BACKFILL": "false"  # never the public relay
    }
    cli = Path(sys.executable).with_name("relay-appview")
    server = subprocess.Popen(
        [str(cli), "serve", "--no-index", "--db", str(db), "--port", str(port)], cwd=workdir, env=env
    )
    results: dict[str, dict] = {}
    rss = PeakRss(server.pid)
    rss.start()
    base = f"http://127.0.0.1:{port}"
    counts = [int(c) for c in args.connections.split(",")]
    try:
        wait_up(f"{base}/xrpc/_health", server)
        for name, paths in workloads(base, vocab, args.tracks, args.accounts).items():
            for connections in counts:
                label = f"{name}@{connections}"
                results[label] = wrk(base, paths, args.seconds, connections, workdir)
                print(label, results[label], flush=True)
    finally:
        rss.halt.set()
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    ceiling_port = free_port()
    ceiling = subprocess.Popen([sys.executable, "-c", _CEILING, str(ceiling_port)], env=env)
    try:
        wait_up(f"http://127.0.0.1:{ceiling_port}/ok", ceiling)
        for connections in counts:
            ceiling_url = f"http://127.0.0.1:{ceiling_port}"
            results[f"ceiling@{connections}"] = wrk(ceiling_url, ["/ok"], args.seconds, connections, workdir)
    finally:
        ceiling.send_signal(signal.SIGTERM)
        ceiling.wait(30)
    return results, rss.peak


if __name__ == "__main__":
    main()
