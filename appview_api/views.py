"""Database rows to the lexicon's `app.relay.defs#trackView`: optional fields are omitted, never null."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from indexer.events import TRACK_COLLECTION

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The columns every track query selects, in this order (see queries.py).
COLUMNS = "did, rkey, cid, title, artist, album, audio_url, file_type, duration, created_at, indexed_us, sort_us"


class TrackRow(NamedTuple):
    did: str
    rkey: str
    cid: str
    title: str
    artist: str
    album: str | None
    audio_url: str
    file_type: str
    duration: int | None
    created_at: str
    indexed_us: int
    sort_us: int


def track_view(row: TrackRow, handle: str | None) -> dict[str, Any]:
    author = {"did": row.did} if handle is None else {"did": row.did, "handle": handle}
    view: dict[str, Any] = {
        "uri": track_uri(row.did, row.rkey),
        "cid": row.cid,
        "author": author,
        "title": row.title,
        "artist": row.artist,
    }
    if row.album is not None:
        view["album"] = row.album
    view["audioUrl"] = row.audio_url
    view["fileType"] = row.file_type
    if row.duration is not None:
        view["duration"] = row.duration
    view["createdAt"] = row.created_at
    view["indexedAt"] = iso_micros(row.indexed_us)
    return view


def track_uri(did: str, rkey: str) -> str:
    return f"at://{did}/{TRACK_COLLECTION}/{rkey}"


def iso_micros(us: int) -> str:
    """ISO 8601 in UTC with milliseconds and 'Z', the shape atproto datetimes use."""
    moment = _EPOCH + timedelta(microseconds=us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
