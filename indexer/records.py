"""Validation of app.relay.track records at ingest, driven by lexicons/app/relay/track.json.

lexrpc checks the record against the lexicon (required fields, lengths in bytes, enum, integer bounds,
uri and datetime formats). What a lexicon cannot say is checked here: the `$type`, that the record key is
of the lexicon's key type, and that createdAt is not far in the future (a record must not be able to sit
on top of the feed by lying about its date).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lexrpc.base import ValidationError

from indexer import lexicons, tid
from indexer.errors import InvalidRecord
from indexer.events import TRACK_COLLECTION, Commit

_KEY_TYPE = lexicons.main_def(TRACK_COLLECTION)["key"]


@dataclass(frozen=True, slots=True)
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
    try:
        lexicons.validator().validate(TRACK_COLLECTION, "record", record)
    except ValidationError as exc:
        raise InvalidRecord(str(exc)) from None
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
