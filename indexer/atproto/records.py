"""Validation of app.relay.track records at ingest, driven by lexicons/app/relay/track.json.

The lexicon file is compiled once into plain checks (`lexicon_check`: required fields, lengths in
bytes, enum, integer bounds, uri and datetime formats), which agree with lexrpc at a tenth of its cost on
the ingest path. What a lexicon cannot say is checked here: the `$type`, that the record key is
of the lexicon's key type, and that createdAt is not far in the future (a record must not be able to sit
on top of the feed by lying about its date).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from indexer.atproto import lexicon_check, lexicons, tid
from indexer.atproto.datetimes import us_from_iso
from indexer.atproto.nsid import TRACK_COLLECTION
from indexer.errors import InvalidRecord

_MAIN = lexicons.main_def(TRACK_COLLECTION)
_KEY_TYPE = _MAIN["key"]
_CHECK = lexicon_check.compile_object(_MAIN["record"])


@dataclass(slots=True)
class Track:
    """The indexed fields of a valid track record."""

    title: str
    artist: str
    album: str | None
    audio_url: str
    file_type: str
    duration: int | None
    created_at: str
    created_us: int


def validate_track(record: dict[str, Any] | None, rkey: str, time_us: int, max_future_us: int) -> Track:
    """Raise InvalidRecord (reason names the field) unless `record`, written at `time_us` under `rkey`, is
    a valid track."""
    if record is None:
        raise InvalidRecord("record: missing")
    kind = record.get("$type")
    if kind != TRACK_COLLECTION:
        raise InvalidRecord(f"$type: expected {TRACK_COLLECTION}, got {repr(kind)[:64]}")
    if _KEY_TYPE == "tid" and not tid.is_tid(rkey):
        raise InvalidRecord(f"rkey: {rkey[:64]!r} is not a TID")
    reason = _CHECK(record)
    if reason is not None:
        raise InvalidRecord(reason)
    created_at = record["createdAt"]
    try:
        created_us = us_from_iso(created_at)
    except ValueError as exc:
        raise InvalidRecord(f"createdAt: {exc}") from None
    if created_us > time_us + max_future_us:
        raise InvalidRecord(f"createdAt: {created_at} is too far in the future")
    return Track(
        title=record["title"],
        artist=record["artist"],
        album=record.get("album"),
        audio_url=record["audioUrl"],
        file_type=record["fileType"],
        duration=record.get("duration"),
        created_at=created_at,
        created_us=created_us,
    )

