"""Settings: the only module that reads the environment (and `.env`).

Every setting has a default that runs on one machine with no set-up. Environment variables win over
`.env`; CLI flags win over both (the CLI passes them to `Settings.replace`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

from indexer.errors import ConfigError

PUBLIC_JETSTREAM_URLS = (
    "wss://jetstream1.us-east.bsky.network/subscribe",
    "wss://jetstream2.us-east.bsky.network/subscribe",
    "wss://jetstream1.us-west.bsky.network/subscribe",
    "wss://jetstream2.us-west.bsky.network/subscribe",
)


@dataclass(frozen=True)
class Settings:
    db_path: Path = Path("./data/relay.duckdb")
    jetstream_urls: tuple[str, ...] = PUBLIC_JETSTREAM_URLS
    jetstream_compress: bool = True
    plc_url: str = "https://plc.directory"
    # Indexer batching: a batch closes at `batch_size` events or after `batch_seconds`.
    batch_size: int = 10000
    batch_seconds: float = 0.25
    # Reconnect: rewind on reconnect / further on host switch; backoff bounds; stall and quiet limits.
    rewind_seconds: float = 5.0
    switch_rewind_seconds: float = 10.0
    backoff_min_seconds: float = 1.0
    backoff_max_seconds: float = 30.0
    stall_seconds: float = 90.0
    quiet_seconds: float = 1800.0
    # Audio checks.
    audio_allow_insecure: bool = False
    audio_hosts: frozenset[str] = frozenset()
    audio_concurrency: int = 64
    audio_per_host: int = 16
    audio_timeout_seconds: float = 10.0
    audio_retries: int = 3
    audio_recheck_seconds: float = 86400.0
    future_skew_seconds: float = 86400.0
    # API.
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    service_did: str = ""
    cursor_secret: str = ""
    # Storage and publishing.
    storage: str = "local"
    audio_dir: Path = Path("./data/audio")
    max_upload_bytes: int = 100 * 1024 * 1024
    r2_account_id: str = ""
    r2_access_key_id: str = ""
    r2_secret_access_key: str = ""
    r2_bucket_name: str = "relay-audio"
    r2_public_url: str = ""
    r2_endpoint_url: str = ""
    publish_rate_per_minute: int = 30
    # `relay-appview publish` signs in as this account; at RELAY_PDS_URL if set, else at the PDS its
    # DID document names.
    handle: str = ""
    app_password: str = field(default="", repr=False)
    pds_url: str = ""
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, env_file: str | Path = ".env") -> Settings:
        """Read settings from `.env` (if present) overlaid by the process environment."""
        values: dict[str, str] = {}
        if Path(env_file).is_file():
            values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        values.update(os.environ if environ is None else environ)
        return cls._from_mapping(values)

    @classmethod
    def _from_mapping(cls, env: Mapping[str, str]) -> Settings:
        kwargs: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            name = _ENV_NAMES.get(f.name, "RELAY_" + f.name.upper())
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            kwargs[f.name] = _cast(name, raw.strip(), f.default)
        settings = cls(**kwargs)  # type: ignore[arg-type]
        settings.check()
        return settings

    def replace(self, **changes: object) -> Settings:
        settings = dataclasses.replace(self, **changes)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        if not self.jetstream_urls:
            raise ConfigError("RELAY_JETSTREAM_URLS: at least one URL is needed")
        for url in self.jetstream_urls:
            if not url.startswith(("ws://", "wss://")):
                raise ConfigError(f"RELAY_JETSTREAM_URLS: {url!r} is not a ws:// or wss:// URL")
        if self.storage not in ("local", "r2"):
            raise ConfigError(f"RELAY_STORAGE: {self.storage!r} is not one of local, r2")
        if self.batch_size < 1 or self.batch_seconds <= 0:
            raise ConfigError("RELAY_BATCH_SIZE and RELAY_BATCH_SECONDS must be positive")
        if not 0 < self.port < 65536:
            raise ConfigError(f"RELAY_PORT: {self.port} is not a TCP port")

    @property
    def base_url(self) -> str:
        """Where this service is reachable from outside: builds local audio URLs and the did:web."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def did(self) -> str:
        if self.service_did:
            return self.service_did
        host = self.base_url.split("://", 1)[-1].split("/", 1)[0].replace(":", "%3A")
        return f"did:web:{host}"


_ENV_NAMES = {
    "r2_account_id": "R2_ACCOUNT_ID",
    "r2_access_key_id": "R2_ACCESS_KEY_ID",
    "r2_secret_access_key": "R2_SECRET_ACCESS_KEY",
    "r2_bucket_name": "R2_BUCKET_NAME",
    "r2_public_url": "R2_PUBLIC_URL",
    "r2_endpoint_url": "R2_ENDPOINT_URL",
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _cast(name: str, raw: str, default: object) -> object:
    try:
        if isinstance(default, bool):
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise ValueError("expected true or false")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw)
        if isinstance(default, tuple):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if isinstance(default, frozenset):
            return frozenset(part.strip().lower() for part in raw.split(",") if part.strip())
        return raw
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from exc
