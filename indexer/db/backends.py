"""Which backend a deployment's settings select."""

from __future__ import annotations

from indexer.config import Settings
from indexer.db.duckdb_store import DuckDBStore
from indexer.db.store import Store


def open_store(settings: Settings, *, read_only: bool = False) -> Store:
    """`read_only`: look, never write (the database must exist)."""
    return DuckDBStore(settings.db.path, recheck_seconds=settings.audio.recheck_seconds, read_only=read_only)
