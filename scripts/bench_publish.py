"""Benchmark publishing: 20 files of 1-100 MB through `relay-appview serve --no-index`, local disk and S3.

    .venv/bin/python scripts/bench_publish.py [--files 20] [--max-mb 100]

Everything is real and on loopback: the reference PDS and PLC (tests/pds/start.mjs, as the tests start
them) sign the account in and take every record; moto's S3 server stands in for R2; the service runs as
its own process, so the memory sampled (every 10 ms, psutil) is the service's alone. Files are WAV
headers plus silence, written in chunks. The same bytes are then copied to the S3 server with boto3's
`upload_file` alone, the ceiling for the R2 backend. MB here are MiB. The last line printed is one JSON
object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.pds import LocalPds, PdsAccount, local_pds  # noqa: E402
from tests.fixtures.s3 import ACCESS_KEY, SECRET_KEY, S3Server, s3_server  # noqa: E402

MiB = 1024 * 1024
CLI = str(Path(sys.executable).with_name("relay-appview"))


def write_silence(path: Path, size: int) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(8000)
        chunk = b"\x80" * MiB
        left = size - 44
        while left > 0:
            out.writeframesraw(chunk[: min(MiB, left)])
            left -= MiB
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PeakRss:
    """Samples a process's RSS on a thread; `peak()` is the highest since the last `reset()`."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def reset(self) -> None:
        self._peak = self._process.memory_info().rss

    def peak(self) -> int:
        return max(self._peak, self._process.memory_info().rss)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def service(workdir: Path, pds: LocalPds, env: dict[str, str]) -> Iterator[tuple[str, int]]:
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "R2_"))}
    base.update(
        PYTHONPATH=str(ROOT),  # the tree this script is in, whatever the venv's editable install points at
        RELAY_DB_PATH=str(workdir / "relay.duckdb"),
        RELAY_AUDIO_DIR=str(workdir / "audio"),
        RELAY_PORT=str(port),
        RELAY_PLC_URL=pds.plc_url,
        RELAY_ALLOW_INSECURE="true",
        RELAY_JETSTREAM_URLS="ws://127.0.0.1:9/subscribe",
        RELAY_BACKFILL_URLS="",  # never the public relay
        RELAY_BACKFILL="false",
        RELAY_MAX_UPLOAD_BYTES=str(110 * MiB),
        RELAY_PUBLISH_RATE_PER_MINUTE="1000",
        RELAY_LOG_LEVEL="WARNING",
        **env,
    )
    process = subprocess.Popen([CLI, "serve", "--no-index"], env=base, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/xrpc/_health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the service did not start")
            time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(30)


def publish(client: httpx.Client, url: str, account: PdsAccount, path: Path) -> None:
    with path.open("rb") as file:
        response = client.post(
            f"{url}/xrpc/app.relay.track.publish",
            data={"title": path.stem, "artist": "Bench"},
            files={"audio": (path.name, file)},
            headers=account.auth_headers,
        )
    if response.status_code != 200:
        raise RuntimeError(f"publish {path.name}: {response.status_code} {response.text}")


def run_backend(
    name: str, workdir: Path, pds: LocalPds, account: PdsAccount, files: list[Path], warmup: Path, env: dict[str, str]
) -> tuple[float, float]:
    """Publish every file in turn; return (MB/s over all files, peak RSS growth in MB during the largest)."""
    workdir.mkdir()
    with service(workdir, pds, env) as (url, pid), httpx.Client(timeout=600) as client:
        publish(client, url, account, warmup)  # first-request costs (imports, pools) are not upload memory
        time.sleep(0.5)
        sampler = PeakRss(pid)
        idle = psutil.Process(pid).memory_info().rss
        largest = max(files, key=lambda p: p.stat().st_size)
        growth = 0
        total = sum(p.stat().st_size for p in files)
        started = time.perf_counter()
        for path in files:
            sampler.reset()
            publish(client, url, account, path)
            if path == largest:
                growth = sampler.peak() - idle
        elapsed = time.perf_counter() - started
        sampler.stop()
    rate = total / MiB / elapsed
    print(f"{name:>6}: {len(files)} files, {total / MiB:.0f} MB in {elapsed:.2f} s = {rate:.1f} MB/s; "
          f"service RSS idle {idle / MiB:.0f} MB, +{growth / MiB:.1f} MB peak while the "
          f"{largest.stat().st_size / MiB:.0f} MB file uploaded", flush=True)
    return rate, growth / MiB


def raw_s3(s3: S3Server, files: list[Path]) -> float:
    client = s3.client()
    bucket = s3.create_bucket()
    total = sum(p.stat().st_size for p in files)
    started = time.perf_counter()
    for path in files:
        client.upload_file(str(path), bucket, path.name)
    elapsed = time.perf_counter() - started
    rate = total / MiB / elapsed
    print(f"raw S3: boto3 upload_file alone, {total / MiB:.0f} MB in {elapsed:.2f} s = {rate:.1f} MB/s", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--max-mb", type=int, default=100)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="relay-bench-publish-"))
    pds_fixture = local_pds.__wrapped__()  # type: ignore[attr-defined]
    s3_fixture = s3_server.__wrapped__()  # type: ignore[attr-defined]
    try:
        pds, s3 = next(pds_fixture), next(s3_fixture)
        account = pds.create_account("bench")
        sizes = [max(1, round(1 + i * (args.max_mb - 1) / max(args.files - 1, 1))) for i in range(args.files)]
        files = [write_silence(scratch / f"bench-{i:02d}-{mb}mb.wav", mb * MiB + i) for i, mb in enumerate(sizes)]
        warmup = write_silence(scratch / "warmup.wav", 64 * 1024)
        print(f"{len(files)} files, {sum(sizes)} MB in all, {min(sizes)}-{max(sizes)} MB each", flush=True)

        local_rate, local_growth = run_backend("local", scratch / "local", pds, account, files, warmup, {})
        bucket = s3.create_bucket()
        r2_env = {
            "RELAY_STORAGE": "r2",
            "R2_ENDPOINT_URL": s3.endpoint_url,
            "R2_ACCESS_KEY_ID": ACCESS_KEY,
            "R2_SECRET_ACCESS_KEY": SECRET_KEY,
            "R2_BUCKET_NAME": bucket,
            "R2_PUBLIC_URL": f"{s3.endpoint_url}/{bucket}",
        }
        r2_rate, r2_growth = run_backend("r2", scratch / "r2", pds, account, files, warmup, r2_env)
        raw_rate = raw_s3(s3, files)
        print(f"r2 publish is {100 * r2_rate / raw_rate:.0f}% of the raw S3 copy", flush=True)
        print(json.dumps({
            "local_mb_per_s": round(local_rate, 1),
            "r2_mb_per_s": round(r2_rate, 1),
            "raw_s3_mb_per_s": round(raw_rate, 1),
            "rss_growth_mb": round(max(local_growth, r2_growth), 1),
        }))
    finally:
        for fixture in (s3_fixture, pds_fixture):
            next(fixture, None)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
