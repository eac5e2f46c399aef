"""Tracks as the lexicon's `app.relay.defs#trackView` (optional fields omitted, never null), and the compact
form the catalog keeps them in between requests."""

from __future__ import annotations

from typing import Any

import orjson

from indexer.atproto.datetimes import iso_from_us
from indexer.atproto.uri import record_uri


def payload(
    cid: str | None,
    title: str | None,
    artist: str | None,
    album: str | None,
    audio_url: str | None,
    file_type: str | None,
    duration: int | None,
    created_at: str | None,
    indexed_us: int,
) -> bytes:
    """A track's own view fields as a JSON array: ~200 bytes, where a dict or tuple of str costs ~800.

    Copied into an exact-size bytes: orjson's result keeps a far larger allocation behind it (1M payloads
    measured 4 GiB of RSS uncopied, 230 MiB copied)."""
    fields = (cid, title, artist, album, audio_url, file_type, duration, created_at, iso_from_us(indexed_us))
    return bytes(memoryview(orjson.dumps(fields)))


def track_view(did: str, handle: str | None, rkey: str, stored: bytes) -> dict[str, Any]:
    cid, title, artist, album, audio_url, file_type, duration, created_at, indexed_at = orjson.loads(stored)
    view: dict[str, Any] = {
        "uri": record_uri(did, rkey),
        "cid": cid,
        "author": {"did": did} if handle is None else {"did": did, "handle": handle},
        "title": title,
        "artist": artist,
    }
    if album is not None:
        view["album"] = album
    view["audioUrl"] = audio_url
    view["fileType"] = file_type
    if duration is not None:
        view["duration"] = duration
    view["createdAt"] = created_at
    view["indexedAt"] = indexed_at
    return view
