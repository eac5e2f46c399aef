"""Audio storage: local files and R2 (a real S3 server on loopback), and /audio/{key} served by real uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import uvicorn
from starlette.applications import Starlette

from appview_api.audio.routes import audio_route
from appview_api.audio.storage import (
    CACHE_CONTROL,
    PART_BYTES,
    AudioStorage,
    LocalStorage,
    R2Storage,
    StorageError,
    StoredObject,
    make_key,
    make_storage,
    migrate_local_to_r2,
    r2_client,
)
from appview_api.xrpc import EXCEPTION_HANDLERS
from indexer.config import StorageSettings
from indexer.errors import ConfigError
from tests.builders import make_settings
from tests.fixtures.s3 import S3Server

MiB = 1024 * 1024
BAD_KEYS = [
    "../relay.duckdb",
    "a" * 64 + ".exe",
    "A" * 64 + ".mp3",
    "a" * 63 + ".mp3",
    "a" * 64 + ".mp3/..",
    "a" * 64 + ".mp3\n",
    "a" * 64,
    "",
]


def write_blob(path: Path, data: bytes) -> tuple[Path, str]:
    path.write_bytes(data)
    return path, make_key(hashlib.sha256(data).hexdigest(), "mp3")


BASE_URL = "http://127.0.0.1:8080"


def settings_for(tmp_path: Path, **variables: object) -> StorageSettings:
    return make_settings(RELAY_AUDIO_DIR=tmp_path / "audio", **variables).storage


@contextlib.asynccontextmanager
async def serve(storage: AudioStorage) -> AsyncIterator[httpx.AsyncClient]:
    """The audio route in a tiny Starlette app on a real uvicorn, on this test's loop."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    app = Starlette(routes=[audio_route(storage)], exception_handlers=EXCEPTION_HANDLERS)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}") as client:
            yield client
    finally:
        server.should_exit = True
        await task


# --- keys ---------------------------------------------------------------------------------------------


def test_make_key_normalises_hex_and_refuses_unknown_types() -> None:
    assert make_key("AB" * 32, "flac") == "ab" * 32 + ".flac"
    with pytest.raises(StorageError) as caught:
        make_key("ab" * 32, "exe")
    assert caught.value.reason == f"invalid audio key '{'ab' * 32}.exe'"


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_never_reach_disk_or_bucket(tmp_path: Path, key: str) -> None:
    local = LocalStorage(tmp_path, "http://127.0.0.1:8080")
    remote = R2Storage(client=None, bucket="unused", public_base_url="https://audio.example.test")
    source, _ = write_blob(tmp_path / "upload", b"x")

    for call in (
        local.put_file(source, key, "audio/mpeg"),
        local.exists(key),
        local.delete(key),
        remote.put_file(source, key, "audio/mpeg"),
        remote.stat(key),
        remote.delete(key),
    ):
        with pytest.raises(StorageError) as caught:
            await call
        assert caught.value.reason == f"invalid audio key {key!r}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upload"]


# --- local --------------------------------------------------------------------------------------------


async def test_local_put_is_content_addressed_and_atomic(tmp_path: Path) -> None:
    storage = make_storage(settings_for(tmp_path), BASE_URL)
    source, key = write_blob(tmp_path / "upload", b"ID3 pretend audio")

    assert isinstance(storage, LocalStorage)
    assert await storage.exists(key) is False
    assert await storage.put_file(source, key, "audio/mpeg") is True
    assert await storage.put_file(source, key, "audio/mpeg") is False

    stored = tmp_path / "audio" / key
    assert stored.read_bytes() == b"ID3 pretend audio"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o644
    assert [p.name for p in (tmp_path / "audio").iterdir()] == [key]  # no temp file left behind
    assert await storage.exists(key) is True
    assert await storage.stat(key) == StoredObject(17, "audio/mpeg")
    assert storage.public_url(key) == f"http://127.0.0.1:8080/audio/{key}"


async def test_local_delete_is_idempotent(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "audio", "https://relay.example.test/")
    source, key = write_blob(tmp_path / "upload", b"bytes")
    await storage.put_file(source, key, "audio/mpeg")

    await storage.delete(key)
    await storage.delete(key)

    assert await storage.exists(key) is False
    assert await storage.stat(key) is None
    assert storage.public_url(key) == f"https://relay.example.test/audio/{key}"


async def test_local_put_into_an_unusable_directory_raises(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    storage = LocalStorage(tmp_path / "file" / "audio", "http://127.0.0.1:8080")
    source, key = write_blob(tmp_path / "upload", b"bytes")

    with pytest.raises(StorageError) as caught:
        await storage.put_file(source, key, "audio/mpeg")

    assert caught.value.reason == f"cannot write to {tmp_path / 'file' / 'audio'}: Not a directory"


# --- local serving ------------------------------------------------------------------------------------


async def test_local_route_serves_whole_ranges_and_head(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "audio", "http://127.0.0.1:8080")
    body = bytes(range(256)) * 40
    source, key = write_blob(tmp_path / "upload", body)
    await storage.put_file(source, key, "audio/mpeg")

    async with serve(storage) as client:
        whole = await client.get(f"/audio/{key}")
        part = await client.get(f"/audio/{key}", headers={"Range": "bytes=100-199"})
        tail = await client.get(f"/audio/{key}", headers={"Range": "bytes=-10"})
        beyond = await client.get(f"/audio/{key}", headers={"Range": "bytes=20000-"})
        head = await client.head(f"/audio/{key}")

    assert whole.status_code == 200
    assert whole.content == body
    assert whole.headers["content-type"] == "audio/mpeg"
    assert whole.headers["cache-control"] == CACHE_CONTROL
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["etag"] == f'"{key[:64]}"'
    assert (part.status_code, part.headers["content-range"], part.content) == (
        206,
        "bytes 100-199/10240",
        body[100:200],
    )
    assert (tail.status_code, tail.content) == (206, body[-10:])
    assert (beyond.status_code, beyond.headers["content-range"]) == (416, "bytes */10240")
    assert (head.status_code, head.headers["content-length"], head.content) == (200, "10240", b"")


@pytest.mark.parametrize(
    ("file_type", "content_type"),
    [("mp3", "audio/mpeg"), ("wav", "audio/wav"), ("ogg", "audio/ogg"), ("flac", "audio/flac")],
)
async def test_local_route_content_type_follows_the_key(tmp_path: Path, file_type: str, content_type: str) -> None:
    storage = LocalStorage(tmp_path / "audio", "http://127.0.0.1:8080")
    source = tmp_path / "upload"
    source.write_bytes(file_type.encode())
    key = make_key(hashlib.sha256(file_type.encode()).hexdigest(), file_type)
    await storage.put_file(source, key, content_type)

    async with serve(storage) as client:
        response = await client.get(f"/audio/{key}")

    assert response.headers["content-type"] == content_type


@pytest.mark.parametrize(
    "path",
    [
        "/audio/" + "b" * 64 + ".mp3",  # well-formed, absent
        "/audio/%2e%2e%2fsecret",  # "../secret" once decoded
        "/audio/" + "B" * 64 + ".mp3",
        "/audio/" + "b" * 64 + ".txt",
        "/audio/.upload-x.tmp",
    ],
)
async def test_local_route_answers_404_to_anything_else(tmp_path: Path, path: str) -> None:
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / ".upload-x.tmp").write_bytes(b"half-written")
    (tmp_path / "secret").write_text("do not serve")
    storage = LocalStorage(tmp_path / "audio", "http://127.0.0.1:8080")

    async with serve(storage) as client:
        get = await client.get(path)
        head = await client.head(path)

    assert (get.status_code, get.json()["error"]) == (404, "NotFound")
    assert head.status_code == 404


# --- r2 -----------------------------------------------------------------------------------------------


async def test_r2_put_is_content_addressed(tmp_path: Path, r2_overrides: dict[str, str], s3_server: S3Server) -> None:
    storage = make_storage(settings_for(tmp_path, **r2_overrides), BASE_URL)
    source, key = write_blob(tmp_path / "upload", b"fLaC pretend audio")

    assert isinstance(storage, R2Storage)
    assert await storage.exists(key) is False
    assert await storage.put_file(source, key, "audio/flac") is True
    assert await storage.put_file(source, key, "audio/flac") is False

    head = s3_server.client().head_object(Bucket=r2_overrides["R2_BUCKET_NAME"], Key=key)
    assert (head["ContentType"], head["CacheControl"], head["ContentLength"]) == ("audio/flac", CACHE_CONTROL, 18)
    assert await storage.stat(key) == StoredObject(18, "audio/flac")
    assert storage.public_url(key) == f"{r2_overrides['R2_PUBLIC_URL']}/{key}"

    await storage.delete(key)
    await storage.delete(key)
    assert await storage.exists(key) is False


async def test_r2_missing_bucket_fails_the_upload(tmp_path: Path, r2_overrides: dict[str, str]) -> None:
    storage = make_storage(settings_for(tmp_path, **{**r2_overrides, "R2_BUCKET_NAME": "no-such-bucket"}), BASE_URL)
    source, key = write_blob(tmp_path / "upload", b"bytes")

    with pytest.raises(StorageError) as caught:
        await storage.put_file(source, key, "audio/mpeg")

    assert caught.value.reason.startswith(f"upload of {key} to bucket no-such-bucket failed: ")
    assert "NoSuchBucket" in caught.value.reason


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_r2_unreachable_endpoint_raises_storage_error(tmp_path: Path, r2_overrides: dict[str, str]) -> None:
    endpoint = closed_port_url()
    storage = make_storage(settings_for(tmp_path, **{**r2_overrides, "R2_ENDPOINT_URL": endpoint}), BASE_URL)
    key = make_key("c" * 64, "ogg")

    with pytest.raises(StorageError) as caught:
        await storage.exists(key)

    bucket = r2_overrides["R2_BUCKET_NAME"]
    assert caught.value.reason == (
        f"head_object {key} in bucket {bucket} failed: Could not connect to the endpoint URL: "
        f'"{endpoint}/{bucket}/{key}"'
    )


def test_r2_settings_are_checked_and_endpoint_defaults_to_the_account() -> None:
    with pytest.raises(ConfigError) as caught:
        make_storage(make_settings(RELAY_STORAGE="r2").storage, BASE_URL)
    assert caught.value.reason == (
        "storage r2 needs R2_ACCOUNT_ID or R2_ENDPOINT_URL, R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY, R2_PUBLIC_URL"
    )

    settings = make_settings(
        RELAY_STORAGE="r2",
        R2_ACCOUNT_ID="acct123",
        R2_ACCESS_KEY_ID="k",
        R2_SECRET_ACCESS_KEY="s",
        R2_PUBLIC_URL="https://audio.example.test",
    )
    client = r2_client(settings.storage)
    assert client.meta.endpoint_url == "https://acct123.r2.cloudflarestorage.com"
    assert client.meta.config.request_checksum_calculation == "when_required"
    assert client.meta.config.response_checksum_validation == "when_required"


@contextlib.contextmanager
def peak_rss_growth() -> Iterator[list[int]]:
    """Samples this process's resident memory while the block runs; yields [peak growth in bytes]."""
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.005):
            peak = max(peak, process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = [0]
    try:
        yield result
    finally:
        done.set()
        sampler.join()
        result[0] = max(peak, process.memory_info().rss) - baseline


async def test_r2_large_upload_is_multipart_with_bounded_memory(
    tmp_path: Path, r2_overrides: dict[str, str], s3_server: S3Server
) -> None:
    source = tmp_path / "big.wav"
    digest = hashlib.sha256()
    with source.open("wb") as out:
        for _ in range(40):
            chunk = os.urandom(MiB)
            digest.update(chunk)
            out.write(chunk)
    key = make_key(digest.hexdigest(), "wav")
    storage = make_storage(settings_for(tmp_path, **r2_overrides), BASE_URL)
    await storage.exists(key)  # warm the client (imports, connection pool) before measuring

    with peak_rss_growth() as growth:
        assert await storage.put_file(source, key, "audio/wav") is True

    # Two parts in flight at most: far below the 40 MiB a whole-file read would cost.
    assert growth[0] < 28 * MiB, f"RSS grew {growth[0] / MiB:.1f} MiB"
    head = s3_server.client().head_object(Bucket=r2_overrides["R2_BUCKET_NAME"], Key=key)
    assert head["ContentLength"] == 40 * MiB
    assert head["ETag"].strip('"').endswith(f"-{40 * MiB // PART_BYTES}")  # one part per PART_BYTES
    downloaded = hashlib.sha256()
    async with (
        httpx.AsyncClient() as http,
        http.stream("GET", storage.public_url(key)) as response,
    ):
        async for chunk in response.aiter_bytes():
            downloaded.update(chunk)
    assert downloaded.hexdigest() == digest.hexdigest()


# --- r2 serving ---------------------------------------------------------------------------------------


async def test_r2_route_redirects_get_and_answers_head(tmp_path: Path, r2_overrides: dict[str, str]) -> None:
    storage = make_storage(settings_for(tmp_path, **r2_overrides), BASE_URL)
    source, key = write_blob(tmp_path / "upload", b"ID3 audio behind a redirect")
    await storage.put_file(source, key, "audio/mpeg")
    missing = make_key("d" * 64, "mp3")

    async with serve(storage) as client:
        get = await client.get(f"/audio/{key}")
        followed = await client.get(f"/audio/{key}", follow_redirects=True)
        head = await client.head(f"/audio/{key}")
        head_missing = await client.head(f"/audio/{missing}")
        get_missing = await client.get(f"/audio/{missing}")
        bad = await client.get("/audio/%2e%2e%2fsecret")

    assert get.status_code == 307
    assert get.headers["location"] == f"{r2_overrides['R2_PUBLIC_URL']}/{key}"
    assert get.headers["cache-control"] == "public, max-age=3600"
    assert (followed.status_code, followed.content) == (200, b"ID3 audio behind a redirect")
    assert head.status_code == 200
    assert "location" not in head.headers
    assert head.headers["content-type"] == "audio/mpeg"
    assert head.headers["content-length"] == "27"
    assert head.headers["cache-control"] == CACHE_CONTROL
    assert head.content == b""
    assert head_missing.status_code == 404
    # GET does not look before it redirects (that would cost a round trip per play); the bucket says 404.
    assert get_missing.status_code == 307
    assert bad.status_code == 404


async def test_r2_route_head_reports_an_unreachable_bucket(tmp_path: Path, r2_overrides: dict[str, str]) -> None:
    storage = make_storage(settings_for(tmp_path, **{**r2_overrides, "R2_ENDPOINT_URL": closed_port_url()}), BASE_URL)

    async with serve(storage) as client:
        head = await client.head(f"/audio/{make_key('e' * 64, 'mp3')}")

    assert head.status_code == 503


# --- migration ----------------------------------------------------------------------------------------


async def test_migration_copies_once_and_skips_what_is_there(
    tmp_path: Path, r2_overrides: dict[str, str], s3_server: S3Server
) -> None:
    settings = settings_for(tmp_path, **r2_overrides)
    local = LocalStorage(settings.audio_dir, BASE_URL)
    keys = []
    for i, file_type in enumerate(("mp3", "flac")):
        source = tmp_path / f"upload{i}"
        source.write_bytes(f"audio {i}".encode())
        key = make_key(hashlib.sha256(source.read_bytes()).hexdigest(), file_type)
        await local.put_file(source, key, "unused")
        keys.append(key)
    (settings.audio_dir / ".upload-abc.tmp").write_bytes(b"interrupted")
    (settings.audio_dir / "notes.txt").write_text("not audio")

    first = await migrate_local_to_r2(settings)
    second = await migrate_local_to_r2(settings)

    assert (first.copied, first.skipped, first.ignored, first.bytes_copied) == (2, 0, 2, 14)
    assert (second.copied, second.skipped, second.ignored, second.bytes_copied) == (0, 2, 2, 0)
    listed = s3_server.client().list_objects_v2(Bucket=settings.r2_bucket_name)["Contents"]
    assert sorted(obj["Key"] for obj in listed) == sorted(keys)
    head = s3_server.client().head_object(Bucket=settings.r2_bucket_name, Key=keys[1])
    assert head["ContentType"] == "audio/flac"


async def test_migration_of_a_missing_directory_copies_nothing(tmp_path: Path, r2_overrides: dict[str, str]) -> None:
    report = await migrate_local_to_r2(settings_for(tmp_path, **r2_overrides))

    assert (report.copied, report.skipped, report.ignored, report.bytes_copied) == (0, 0, 0, 0)


def test_s3_server_listens_on_loopback_only(s3_server: S3Server) -> None:
    listening = [
        c.laddr for c in psutil.Process(s3_server.pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
    ]

    assert [f"http://{addr.ip}:{addr.port}" for addr in listening] == [s3_server.endpoint_url]
