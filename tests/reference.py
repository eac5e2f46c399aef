"""What a clean, uninterrupted run makes of a list of events, to compare an interrupted one against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from indexer.db.store import Store
from indexer.ingest.events import parse
from indexer.ingest.planner import Planner
from indexer.ingest.staging import stage

FIELDS = "did, rkey, rev, cid, deleted, hidden, title, artist, album, audio_url, file_type, duration, created_at"


def reference(path: Path, events: list[dict[str, Any]], verified: list[str] = ()) -> list[tuple]:
    """What a clean, uninterrupted run makes of `events`: the planner and store in-process, one batch."""
    store = Store(path)
    store.apply(stage(Planner().plan([parse(orjson.dumps(e)) for e in events])), "reference")
    store.record_audio([_Verified(url) for url in verified])
    rows = snapshot(store, with_audio=bool(verified))
    store.close()
    return rows


class _Verified:
    def __init__(self, url: str) -> None:
        self.url, self.state, self.reason, self.status, self.content_type = url, "verified", "HTTP 200", 200, "audio/mpeg"


def snapshot(store: Store, with_audio: bool = False) -> list[tuple]:
    columns = FIELDS + (", audio_state" if with_audio else "")
    return store.reader().execute(f"SELECT {columns} FROM tracks ORDER BY did, rkey").fetchall()
