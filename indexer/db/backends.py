"""Which backend a deployment's settings select."""

from __future__ import annotations

from indexer.config import Settings
from indexer.db.duckdb_store import DuckDBStore
from indexer.db.store import Store


def open_store(settings: Settings) -> Store:
    return DuckDBStore(settings.db.path, recheck_seconds=settings.audio.recheck_seconds)
