"""Settings: the only module that reads the environment (and `.env`).

Settings come in small frozen parts, one per concern, each field naming its environment variable; a
component is handed the parts it needs. Every setting has a default that runs on one machine with no
set-up. The process environment wins over `.env`; the CLI's flags are given as variables too, and win
over both.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from dotenv import dotenv_values

from indexer.errors import ConfigError

PUBLIC_JETSTREAM_URLS = (
    "wss://jetstream1.us-east.bsky.network/subscribe",
    "wss://jetstream2.us-east.bsky.network/subscribe",
    "wss://jetstream1.us-west.bsky.network/subscribe",
    "wss://jetstream2.us-west.bsky.network/subscribe",
)

MIN_SECRET_LENGTH = 32

T = TypeVar("T")


_NO_BLANK = object()


def setting(env: str, default: T, *aliases: str, secret: bool = False, blank: object = _NO_BLANK) -> T:
    """A field read from `env` (or, when that is unset, from the first alias that is set). A variable set to
    nothing counts as unset, unless `blank` says what it means (`RELAY_BACKFILL_URLS=`: no relays)."""
    metadata = {"env": env, "aliases": aliases, "blank": blank}
    return field(default=default, metadata=metadata, repr=not secret)


@dataclass(frozen=True)
class DatabaseSettings:
    """The DuckDB file (the default: one process), or a PostgreSQL database that one indexer and any number
    of API replicas share (`url`, which wins when set)."""

    path: Path = setting("RELAY_DB_PATH", Path("./data/relay.duckdb"))
    url: str = setting("RELAY_DATABASE_URL", "", secret=True)


@dataclass(frozen=True)
class IngestSettings:
    """Jetstream: where from, how events are batched, and how a lost connection is resumed."""

    jetstream_urls: tuple[str, ...] = setting("RELAY_JETSTREAM_URLS", PUBLIC_JETSTREAM_URLS)
    compress: bool = setting("RELAY_JETSTREAM_COMPRESS", True)
    batch_size: int = setting("RELAY_BATCH_SIZE", 10000)
    batch_seconds: float = setting("RELAY_BATCH_SECONDS", 0.25)
    rewind_seconds: float = setting("RELAY_REWIND_SECONDS", 5.0)
    switch_rewind_seconds: float = setting("RELAY_SWITCH_REWIND_SECONDS", 10.0)
    backoff_min_seconds: float = setting("RELAY_BACKOFF_MIN_SECONDS", 1.0)
    backoff_max_seconds: float = setting("RELAY_BACKOFF_MAX_SECONDS", 30.0)
    stall_seconds: float = setting("RELAY_STALL_SECONDS", 90.0)
    quiet_seconds: float = setting("RELAY_QUIET_SECONDS", 1800.0)
    future_skew_seconds: float = setting("RELAY_FUTURE_SKEW_SECONDS", 86400.0)
    # A connection whose first event is this much newer than the cursor it asked for started past the host's
    # retained window (v1 hosts clamp silently): the events between are gone, and every account is synced again.
    window_gap_seconds: float = setting("RELAY_WINDOW_GAP_SECONDS", 3600.0)

    @property
    def max_future_us(self) -> int:
        return int(self.future_skew_seconds * 1_000_000)


@dataclass(frozen=True)
class NetworkSettings:
    """What every outbound fetch (audio, PDS, DID documents, handles) may dial, and who answers its DNS."""

    allow_insecure: bool = setting("RELAY_ALLOW_INSECURE", False, "RELAY_AUDIO_ALLOW_INSECURE")
    dns_nameservers: tuple[str, ...] = setting("RELAY_DNS_NAMESERVERS", ())

    @property
    def nameservers(self) -> tuple[tuple[str, int], ...]:
        """RELAY_DNS_NAMESERVERS as (IP, port) pairs; empty means the system's resolvers."""
        return tuple(_nameserver(entry) for entry in self.dns_nameservers)


def _nameserver(entry: str) -> tuple[str, int]:
    """`host[:port]` with an IP literal for host (`[addr]:port` for IPv6): a resolver needs no resolver."""
    host, port = entry, "53"
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(f"RELAY_DNS_NAMESERVERS: {entry!r} is not host[:port]")
        port = rest[1:] or port
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"RELAY_DNS_NAMESERVERS: {host!r} is not an IP address") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"RELAY_DNS_NAMESERVERS: {port!r} is not a port")
    return str(address), int(port)


@dataclass(frozen=True)
class AudioCheckSettings:
    hosts: frozenset[str] = setting("RELAY_AUDIO_HOSTS", frozenset())
    concurrency: int = setting("RELAY_AUDIO_CONCURRENCY", 64)
    per_host: int = setting("RELAY_AUDIO_PER_HOST", 16)
    timeout_seconds: float = setting("RELAY_AUDIO_TIMEOUT_SECONDS", 10.0)
    retries: int = setting("RELAY_AUDIO_RETRIES", 3)
    recheck_seconds: float = setting("RELAY_AUDIO_RECHECK_SECONDS", 86400.0)
    # Link rot: answers older than recheck_seconds are asked again, at most this many an hour, spread out.
    rechecks_per_hour: int = setting("RELAY_AUDIO_RECHECKS_PER_HOUR", 600)


@dataclass(frozen=True)
class ProofSettings:
    """Record proofs: a record from the stream shows only once its PDS proves it (indexer/net/prover.py)."""

    verify_records: bool = setting("RELAY_VERIFY_RECORDS", True)
    concurrency: int = setting("RELAY_PROOF_CONCURRENCY", 32)
    per_host: int = setting("RELAY_PROOF_PER_HOST", 8)
    timeout_seconds: float = setting("RELAY_PROOF_TIMEOUT_SECONDS", 10.0)
    retries: int = setting("RELAY_PROOF_RETRIES", 3)  # attempts for a PDS that fails or is busy, then later
    # The first wait after those attempts; it doubles with each miss, up to an hour (or Retry-After).
    retry_seconds: float = setting("RELAY_PROOF_RETRY_SECONDS", 60.0)


DEFAULT_BACKFILL_URLS = ("https://relay1.us-east.bsky.network",)


@dataclass(frozen=True)
class BackfillSettings:
    """The network's history, from the accounts' own repositories (indexer/ingest/backfill.py): which relays
    list the accounts that hold tracks, how often they are asked again, and how repositories are fetched."""

    enabled: bool = setting("RELAY_BACKFILL", True)  # false: follow Jetstream only, sync no repository
    # Relays answering com.atproto.sync.listReposByCollection; set to nothing, no discovery (accounts seen on
    # Jetstream are still synced).
    urls: tuple[str, ...] = setting("RELAY_BACKFILL_URLS", DEFAULT_BACKFILL_URLS, blank=())
    discovery_interval_seconds: float = setting("RELAY_DISCOVERY_INTERVAL_SECONDS", 86400.0)
    concurrency: int = setting("RELAY_BACKFILL_CONCURRENCY", 8)
    per_host: int = setting("RELAY_BACKFILL_PER_HOST", 2)
    max_repo_bytes: int = setting("RELAY_BACKFILL_MAX_REPO_BYTES", 256 * 1024 * 1024)  # one getRepo, as streamed
    timeout_seconds: float = setting("RELAY_BACKFILL_TIMEOUT_SECONDS", 300.0)  # one getRepo, start to end
    retries: int = setting("RELAY_BACKFILL_RETRIES", 3)  # attempts within one sync, before it waits
    retry_seconds: float = setting("RELAY_BACKFILL_RETRY_SECONDS", 60.0)  # the first wait after that, doubling to 1 h


@dataclass(frozen=True)
class AdminSettings:
    """The admin API (`app.relay.admin.*`, off while the token is unset), and where the CLI finds the running
    service (RELAY_ADMIN_URL; unset: http://RELAY_HOST:RELAY_PORT)."""

    token: str = setting("RELAY_ADMIN_TOKEN", "", secret=True)
    url: str = setting("RELAY_ADMIN_URL", "")


@dataclass(frozen=True)
class IdentitySettings:
    plc_url: str = setting("RELAY_PLC_URL", "https://plc.directory")
    timeout_seconds: float = setting("RELAY_IDENTITY_TIMEOUT_SECONDS", 10.0)
    cache_seconds: float = setting("RELAY_IDENTITY_CACHE_SECONDS", 3600.0)  # DID documents kept this long
    negative_cache_seconds: float = setting("RELAY_IDENTITY_NEGATIVE_CACHE_SECONDS", 60.0)  # and failures
    # DID documents fetched for requests not yet authenticated (publish tokens, sign-ins), a minute.
    unauthenticated_lookups_per_minute: int = setting("RELAY_UNAUTHENTICATED_LOOKUPS_PER_MINUTE", 120)
    # A handle shown is verified again once its answer is this old (a domain can change hands), at most
    # this many an hour, spread out.
    handle_recheck_seconds: float = setting("RELAY_HANDLE_RECHECK_SECONDS", 86400.0)
    handle_rechecks_per_hour: int = setting("RELAY_HANDLE_RECHECKS_PER_HOUR", 600)


@dataclass(frozen=True)
class ApiSettings:
    host: str = setting("RELAY_HOST", "127.0.0.1")
    port: int = setting("RELAY_PORT", 8080)
    public_url: str = setting("RELAY_PUBLIC_URL", "")
    service_did: str = setting("RELAY_SERVICE_DID", "")
    cursor_secret: str = setting("RELAY_CURSOR_SECRET", "", secret=True)
    # /xrpc/_health answers 503 once every write has failed for this long (a full disk, a broken database).
    write_grace_seconds: float = setting("RELAY_HEALTH_WRITE_GRACE_SECONDS", 30.0)

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


@dataclass(frozen=True)
class PublishSettings:
    """The publish endpoint's limits, and the account `relay-appview publish` signs in as (at
    RELAY_PDS_URL if set, else at the PDS its DID document names)."""

    max_upload_bytes: int = setting("RELAY_MAX_UPLOAD_BYTES", 100 * 1024 * 1024)
    rate_per_minute: int = setting("RELAY_PUBLISH_RATE_PER_MINUTE", 30)
    read_timeout_seconds: float = setting("RELAY_UPLOAD_READ_TIMEOUT_SECONDS", 30.0)  # silence mid-body: 408
    account_quota_bytes: int = setting("RELAY_ACCOUNT_QUOTA_BYTES", 1024 * 1024 * 1024)  # an account's audio
    # Bytes of uploads the service takes an hour from everyone together: more accounts do not buy more.
    upload_budget_bytes_per_hour: int = setting("RELAY_UPLOAD_BUDGET_BYTES_PER_HOUR", 5 * 1024 * 1024 * 1024)
    handle: str = setting("RELAY_HANDLE", "")
    app_password: str = setting("RELAY_APP_PASSWORD", "", secret=True)
    pds_url: str = setting("RELAY_PDS_URL", "")


@dataclass(frozen=True)
class WebSettings:
    """The web pages' sign-in (atproto OAuth): what seals sessions at rest, the client's signing key, where
    handles are resolved in development, and how often one address may try to sign in."""

    session_secret: str = setting("RELAY_SESSION_SECRET", "", secret=True)
    oauth_client_key: str = setting("RELAY_OAUTH_CLIENT_KEY", "", secret=True)
    handle_resolver_url: str = setting("RELAY_HANDLE_RESOLVER_URL", "")
    signin_rate_per_minute: int = setting("RELAY_SIGNIN_RATE_PER_MINUTE", 10)


@dataclass(frozen=True)
class StorageSettings:
    """Where published audio lives: `local` files under `audio_dir`, or Cloudflare R2 (any S3 API)."""

    kind: str = setting("RELAY_STORAGE", "local")
    audio_dir: Path = setting("RELAY_AUDIO_DIR", Path("./data/audio"))
    r2_account_id: str = setting("R2_ACCOUNT_ID", "")
    r2_access_key_id: str = setting("R2_ACCESS_KEY_ID", "")
    r2_secret_access_key: str = setting("R2_SECRET_ACCESS_KEY", "", secret=True)
    r2_bucket_name: str = setting("R2_BUCKET_NAME", "relay-audio")
    r2_public_url: str = setting("R2_PUBLIC_URL", "")
    r2_endpoint_url: str = setting("R2_ENDPOINT_URL", "")


@dataclass(frozen=True)
class Settings:
    db: DatabaseSettings = field(default_factory=DatabaseSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    net: NetworkSettings = field(default_factory=NetworkSettings)
    audio: AudioCheckSettings = field(default_factory=AudioCheckSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    proofs: ProofSettings = field(default_factory=ProofSettings)
    backfill: BackfillSettings = field(default_factory=BackfillSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    publish: PublishSettings = field(default_factory=PublishSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    web: WebSettings = field(default_factory=WebSettings)
    log_level: str = setting("RELAY_LOG_LEVEL", "INFO")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, env_file: str | Path = ".env") -> Settings:
        """Read settings from `.env` (if present) overlaid by `environ` (default: the process environment)."""
        values: dict[str, str] = {}
        if Path(env_file).is_file():
            values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        values.update(os.environ if environ is None else environ)
        settings = _build(cls, values)
        settings.check()
        return settings

    @property
    def admin_url(self) -> str:
        """Where the CLI looks for a running service: RELAY_ADMIN_URL, else this machine's RELAY_HOST:RELAY_PORT
        (a service listening on every address is reached on loopback)."""
        if self.admin.url:
            return self.admin.url.rstrip("/")
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.api.host, self.api.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.api.port}"

    def check(self) -> None:
        ingest = self.ingest
        if not ingest.jetstream_urls:
            raise ConfigError("RELAY_JETSTREAM_URLS: at least one URL is needed")
        for url in ingest.jetstream_urls:
            if not url.startswith(("ws://", "wss://")):
                raise ConfigError(f"RELAY_JETSTREAM_URLS: {url!r} is not a ws:// or wss:// URL")
        if self.storage.kind not in ("local", "r2"):
            raise ConfigError(f"RELAY_STORAGE: {self.storage.kind!r} is not one of local, r2")
        if ingest.batch_size < 1 or ingest.batch_seconds <= 0:
            raise ConfigError("RELAY_BATCH_SIZE and RELAY_BATCH_SECONDS must be positive")
        if not 0 < self.api.port < 65536:
            raise ConfigError(f"RELAY_PORT: {self.api.port} is not a TCP port")
        _ = self.net.nameservers  # raises ConfigError naming a malformed entry
        if self.db.url:
            check_database_url(self.db.url)
        for url in self.backfill.urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"RELAY_BACKFILL_URLS: {url!r} is not an http:// or https:// URL")
        if self.backfill.concurrency < 1 or self.backfill.per_host < 1:
            raise ConfigError("RELAY_BACKFILL_CONCURRENCY and RELAY_BACKFILL_PER_HOST must be at least 1")
        if self.admin.token and len(self.admin.token) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"RELAY_ADMIN_TOKEN: at least {MIN_SECRET_LENGTH} characters are needed (openssl rand -hex 32)"
            )
        if self.admin.url and not self.admin.url.startswith(("http://", "https://")):
            raise ConfigError(f"RELAY_ADMIN_URL: {self.admin.url!r} is not an http:// or https:// URL")
        if self.web.session_secret and len(self.web.session_secret) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"RELAY_SESSION_SECRET: at least {MIN_SECRET_LENGTH} characters are needed (openssl rand -hex 32)"
            )


def check_database_url(url: str) -> None:
    """A postgresql:// URL (libpq's form: `postgresql://user:password@host:port/database?param=value`). The
    message never repeats a password."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"RELAY_DATABASE_URL: not a URL ({exc})") from None
    if parts.scheme not in ("postgresql", "postgres"):
        shown = f"{parts.scheme}://..." if parts.scheme else "a value with no scheme"
        raise ConfigError(f"RELAY_DATABASE_URL: a postgresql:// URL is needed, not {shown}")
    if port == 0:
        raise ConfigError("RELAY_DATABASE_URL: port 0 is not a TCP port")
    if not parts.path.strip("/") and not parts.query:
        raise ConfigError("RELAY_DATABASE_URL: name the database, as in postgresql://host:5432/relay")


def env_names(cls: type = Settings) -> Iterator[str]:
    """Every variable the settings read, aliases left out (README and .env.example list these)."""
    for f in dataclasses.fields(cls):
        if "env" in f.metadata:
            yield f.metadata["env"]
        else:
            yield from env_names(_part(f))


def _build(cls: type[T], env: Mapping[str, str]) -> T:
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]  # cls is always a settings dataclass
        if "env" not in f.metadata:
            kwargs[f.name] = _build(_part(f), env)
            continue
        for name in (f.metadata["env"], *f.metadata["aliases"]):
            raw = env.get(name)
            if raw is not None and raw.strip():
                kwargs[f.name] = _cast(name, raw.strip(), f.default)
                break
            if raw is not None and f.metadata["blank"] is not _NO_BLANK:
                kwargs[f.name] = f.metadata["blank"]
                break
    return cls(**kwargs)


def _part(f: dataclasses.Field[Any]) -> type:
    """The class of a settings part (a field without a variable of its own, built by its factory)."""
    factory = f.default_factory
    assert callable(factory), f"{f.name}: a settings part needs a default_factory"
    return type(factory())


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
