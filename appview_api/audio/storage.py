"""Where published audio lives: content-addressed objects on local disk or in Cloudflare R2.

A key is the content's sha256 plus its sniffed extension, so the same file published twice is stored
once and an object never changes once written. That makes deletes the caller's problem (another track
may use the same key: check references first) and lets every response be cached forever.

Uploads take a file already on disk (the publish endpoint spools the request body there while hashing
it), so no backend ever holds a whole upload in memory. R2 is reached through its S3 API; boto3 blocks,
so every call runs in a worker thread.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread
import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from appview_api.audio.format import CONTENT_TYPES
from appview_api.errors import StorageError
from indexer.config import StorageSettings
from indexer.errors import ConfigError

log = logging.getLogger(__name__)

KEY_RE = re.compile(r"[0-9a-f]{64}\.(mp3|wav|ogg|flac)")
CACHE_CONTROL = "public, max-age=31536000, immutable"
# Multipart parts of 8 MiB, two in flight: an upload of any size holds ~16 MiB of buffers at most.
PART_BYTES = 8 * 1024 * 1024
TRANSFER = TransferConfig(
    multipart_threshold=PART_BYTES,
    multipart_chunksize=PART_BYTES,
    max_concurrency=2,
)
_COPY_BUFFER = 1024 * 1024


@dataclass(frozen=True)
class StoredObject:
    size: int
    content_type: str


class AudioStorage(Protocol):
    async def put_file(self, path: Path, key: str, content_type: str) -> bool:
        """Store the file under `key`; False when the key was already there (nothing is written)."""
        ...

    async def delete(self, key: str) -> None: ...

    async def exists(self, key: str) -> bool: ...

    async def stat(self, key: str) -> StoredObject | None: ...

    def public_url(self, key: str) -> str: ...


def make_key(sha256_hex: str, file_type: str) -> str:
    return check_key(f"{sha256_hex.lower()}.{file_type}")


def check_key(key: str) -> str:
    """Only keys of this exact shape reach a path or a bucket, so none can name anything else."""
    if not KEY_RE.fullmatch(key):
        raise StorageError(f"invalid audio key {key[:80]!r}")
    return key


def content_type_for(key: str) -> str:
    return CONTENT_TYPES[check_key(key).rsplit(".", 1)[1]]


class LocalStorage:
    def __init__(self, root: Path, base_url: str) -> None:
        self.root = root
        self._base_url = base_url.rstrip("/")

    def path_for(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put_file(self, path: Path, key: str, content_type: str) -> bool:
        return await anyio.to_thread.run_sync(self._put_file, path, self.path_for(key))

    async def delete(self, key: str) -> None:
        self.path_for(key).unlink(missing_ok=True)

    async def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    async def stat(self, key: str) -> StoredObject | None:
        try:
            size = self.path_for(key).stat().st_size
        except FileNotFoundError:
            return None
        return StoredObject(size, content_type_for(key))

    def public_url(self, key: str) -> str:
        return f"{self._base_url}/audio/{check_key(key)}"

    def _put_file(self, source: Path, target: Path) -> bool:
        if target.is_file():
            return False
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".upload-", suffix=".tmp")
        except OSError as exc:
            raise StorageError(f"cannot write to {self.root}: {exc.strerror}") from exc
        tmp = Path(tmp_name)
        try:
            # Readers may see the key only once its bytes are all on disk: write aside, fsync, rename.
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                shutil.copyfileobj(src, out, _COPY_BUFFER)
                out.flush()
                os.fsync(out.fileno())
            tmp.chmod(0o644)
            os.replace(tmp, target)
            _fsync_dir(self.root)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot store {target.name}: {exc.strerror}") from exc
        return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class R2Storage:
    def __init__(self, client: Any, bucket: str, public_base_url: str) -> None:
        self._client = client
        self._bucket = bucket
        self._public_base_url = public_base_url.rstrip("/")

    async def put_file(self, path: Path, key: str, content_type: str) -> bool:
        return await anyio.to_thread.run_sync(self._put_file, path, check_key(key), content_type)

    async def delete(self, key: str) -> None:
        await anyio.to_thread.run_sync(self._delete, check_key(key))

    async def exists(self, key: str) -> bool:
        return await self.stat(key) is not None

    async def stat(self, key: str) -> StoredObject | None:
        return await anyio.to_thread.run_sync(self._head, check_key(key))

    def public_url(self, key: str) -> str:
        return f"{self._public_base_url}/{check_key(key)}"

    def _put_file(self, path: Path, key: str, content_type: str) -> bool:
        if self._head(key) is not None:
            return False
        extra = {"ContentType": content_type, "CacheControl": CACHE_CONTROL}
        try:
            # From a file name, s3transfer reads each part when it sends it: memory stays at TRANSFER's cap.
            self._client.upload_file(str(path), self._bucket, key, ExtraArgs=extra, Config=TRANSFER)
        except (Boto3Error, BotoCoreError, ClientError) as exc:
            raise StorageError(f"upload of {key} to bucket {self._bucket} failed: {exc}") from exc
        return True

    def _head(self, key: str) -> StoredObject | None:
        try:
            head = self._client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageError(f"head_object {key} in bucket {self._bucket} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"head_object {key} in bucket {self._bucket} failed: {exc}") from exc
        return StoredObject(head["ContentLength"], head.get("ContentType") or content_type_for(key))

    def _delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self._bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"delete_object {key} in bucket {self._bucket} failed: {exc}") from exc


def r2_client(settings: StorageSettings) -> Any:
    """An S3 client for R2 (or any S3-compatible server named by R2_ENDPOINT_URL)."""
    endpoint = settings.r2_endpoint_url or (
        f"https://{settings.r2_account_id}.r2.cloudflarestorage.com" if settings.r2_account_id else ""
    )
    missing = [
        name
        for name, value in (
            ("R2_ACCOUNT_ID or R2_ENDPOINT_URL", endpoint),
            ("R2_ACCESS_KEY_ID", settings.r2_access_key_id),
            ("R2_SECRET_ACCESS_KEY", settings.r2_secret_access_key),
            ("R2_BUCKET_NAME", settings.r2_bucket_name),
            ("R2_PUBLIC_URL", settings.r2_public_url),
        )
        if not value
    ]
    if missing:
        raise ConfigError(f"storage r2 needs {', '.join(missing)}")
    config = Config(
        signature_version="s3v4",
        # R2 rejects some of the checksums newer botocore sends by default; send them only when required.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=TRANSFER.max_request_concurrency + 8,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=settings.r2_access_key_id,
        aws_secret_access_key=settings.r2_secret_access_key,
        region_name="auto",
        config=config,
    )


def make_storage(settings: StorageSettings, base_url: str) -> LocalStorage | R2Storage:
    """`base_url`: this service's public URL, which serves local objects under /audio/."""
    if settings.kind == "r2":
        return R2Storage(r2_client(settings), settings.r2_bucket_name, settings.r2_public_url)
    return LocalStorage(settings.audio_dir, base_url)


@dataclass(frozen=True)
class MigrationReport:
    copied: int
    skipped: int
    ignored: int
    bytes_copied: int


async def migrate_local_to_r2(settings: StorageSettings) -> MigrationReport:
    """Copy every local object to R2. Safe to rerun: objects already in the bucket are skipped."""
    remote = R2Storage(r2_client(settings), settings.r2_bucket_name, settings.r2_public_url)
    copied = skipped = ignored = bytes_copied = 0
    paths = sorted(settings.audio_dir.iterdir()) if settings.audio_dir.is_dir() else []
    for path in paths:
        if not (path.is_file() and KEY_RE.fullmatch(path.name)):
            ignored += 1
            continue
        if await remote.put_file(path, path.name, content_type_for(path.name)):
            size = path.stat().st_size
            copied += 1
            bytes_copied += size
            log.info("migrated audio key=%s size=%d", path.name, size, extra={"key": path.name, "size": size})
        else:
            skipped += 1
    return MigrationReport(copied, skipped, ignored, bytes_copied)
