"""Validation of app.relay.track records at ingest, driven by lexicons/app/relay/track.json.

The lexicon file is compiled once into plain checks (`lexicon_check`: required fields, lengths in
bytes, enum, integer bounds, uri and datetime formats), which agree with lexrpc at a tenth of its cost on
the ingest path. What a lexicon cannot say is checked here: the `$type`, that the record key is
of the lexicon's key type, and that createdAt is not far in the future (a record must not be able to sit
on top of the feed by lying about its date).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from indexer.atproto import lexicon_check, lexicons, tid
from indexer.errors import InvalidRecord
from indexer.ingest.events import TRACK_COLLECTION, Commit

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


def validate_track(commit: Commit, max_future_us: int) -> Track:
    """Raise InvalidRecord (reason names the field) unless the commit's record is a valid track."""
    record = commit.record
    if record is None:
        raise InvalidRecord("record: missing")
    if record.get("$type") != TRACK_COLLECTION:
        raise InvalidRecord(f"$type: expected {TRACK_COLLECTION}, got {record.get('$type')!r}")
    if _KEY_TYPE == "tid" and not tid.is_tid(commit.rkey):
        raise InvalidRecord(f"rkey: {commit.rkey!r} is not a TID")
    reason = _CHECK(record)
    if reason is not None:
        raise InvalidRecord(reason)
    created_at = record["createdAt"]
    created_us = _micros(created_at)
    if created_us > commit.time_us + max_future_us:
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


def _micros(value: str) -> int:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRecord(f"createdAt: {value!r} is not an ISO 8601 datetime") from None
    if parsed.tzinfo is None:
        raise InvalidRecord(f"createdAt: {value!r} has no timezone")
    return int(parsed.timestamp() * 1_000_000)
