"""Which backend a deployment's settings select: PostgreSQL when RELAY_DATABASE_URL is set, else the DuckDB
file."""

from __future__ import annotations

from indexer.config import Settings
from indexer.db.duckdb_store import DuckDBStore
from indexer.db.pg_store import PgStore
from indexer.db.store import Store


def open_store(settings: Settings, *, read_only: bool = False) -> Store:
    """`read_only`: look, never write (the database must exist)."""
    recheck = settings.audio.recheck_seconds
    if settings.db.url:
        return PgStore(settings.db.url, recheck_seconds=recheck, read_only=read_only)
    return DuckDBStore(settings.db.path, recheck_seconds=recheck, read_only=read_only)
