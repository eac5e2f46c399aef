"""What a clean, uninterrupted run makes of a list of events, to compare an interrupted one against."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from indexer.db.duckdb_store import DuckDBStore
from indexer.db.rows import AudioResult, AudioState
from indexer.db.store import Store
from tests.builders import Applier
from tests.stores import query

FIELDS = "did, rkey, rev, cid, deleted, hidden, title, artist, album, audio_url, file_type, duration, created_at"


def reference(path: Path, events: list[dict[str, Any]], verified: Sequence[str] = ()) -> list[tuple]:
    """What a clean, uninterrupted run makes of `events`: the planner and store in-process, one batch."""
    store = DuckDBStore(path)
    Applier(store).apply(*events, source="reference")
    store.record_audio([AudioResult(url, AudioState.VERIFIED, "HTTP 200", 200, "audio/mpeg") for url in verified])
    rows = snapshot(store, with_audio=bool(verified))
    store.close()
    return rows


def snapshot(store: Store, with_audio: bool = False) -> list[tuple]:
    """The tracks as a list of rows, on either backend."""
    columns = FIELDS + (", audio_state" if with_audio else "")
    return query(store, f"SELECT {columns} FROM tracks ORDER BY did, rkey")
