import pytest

from indexer.atproto.records import Track, validate_track
from indexer.errors import InvalidRecord

NOW_US = 1_779_719_009_132_431  # 2026-05-25T14:23:29Z
DAY_US = 86_400_000_000
GOOD = {
    "$type": "app.relay.track",
    "title": "Song",
    "artist": "Artist",
    "album": "Album",
    "audioUrl": "https://audio.example.r2.dev/abc.mp3",
    "fileType": "mp3",
    "duration": 240,
    "createdAt": "2026-05-25T14:00:00.000Z",
}


def validate(record: dict | None, rkey: str = "3mmoojp7etg2g") -> Track:
    """As a record written under `rkey` and seen at NOW_US."""
    return validate_track(record, rkey, NOW_US, DAY_US)


def test_valid_record() -> None:
    assert validate(GOOD) == Track(
        title="Song", artist="Artist", album="Album", audio_url="https://audio.example.r2.dev/abc.mp3",
        file_type="mp3", duration=240, created_at="2026-05-25T14:00:00.000Z", created_us=1779717600000000,
    )


def test_optional_fields_may_be_absent() -> None:
    record = {k: v for k, v in GOOD.items() if k not in ("album", "duration")}
    track = validate(record)
    assert (track.album, track.duration) == (None, None)


def _without(key: str) -> dict:
    return {k: v for k, v in GOOD.items() if k != key}


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (_without("title"), "missing required property title"),
        (_without("artist"), "missing required property artist"),
        (_without("audioUrl"), "missing required property audioUrl"),
        (_without("fileType"), "missing required property fileType"),
        (_without("createdAt"), "missing required property createdAt"),
        ({**GOOD, "title": "x" * 281}, "is longer (281) than maxLength 280"),
        ({**GOOD, "artist": "é" * 141}, "is longer (282) than maxLength 280"),  # bytes, not characters
        ({**GOOD, "album": "y" * 281}, "is longer (281) than maxLength 280"),
        ({**GOOD, "title": 5}, "has unexpected type int"),
        ({**GOOD, "fileType": "aac"}, "is not one of enum values"),
        ({**GOOD, "fileType": "MP3"}, "is not one of enum values"),
        ({**GOOD, "duration": -1}, "is lower than minimum 0"),
        ({**GOOD, "duration": 1.5}, "has unexpected type float"),
        ({**GOOD, "duration": "240"}, "has unexpected type str"),
        ({**GOOD, "duration": True}, "has unexpected type bool"),
        ({**GOOD, "audioUrl": "not a url"}, "is invalid for format uri"),
        ({**GOOD, "createdAt": "yesterday"}, "is invalid for format datetime"),
        ({**GOOD, "createdAt": "2026-05-25T14:00:00"}, "is invalid for format datetime"),
        ({**GOOD, "createdAt": "2027-01-01T00:00:00Z"}, "createdAt: 2027-01-01T00:00:00Z is too far in the future"),
    ],
)
def test_lexicon_violations_are_rejected_with_reason(record: dict, reason: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        validate(record)
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    ("record", "rkey", "reason"),
    [
        (None, "3mmoojp7etg2g", "record: missing"),
        ({**GOOD, "$type": "app.bsky.feed.post"}, "3mmoojp7etg2g", "$type: expected app.relay.track, got 'app.bsky.feed.post'"),
        (_without("$type"), "3mmoojp7etg2g", "$type: expected app.relay.track, got None"),
        (GOOD, "self", "rkey: 'self' is not a TID"),
        (GOOD, "3MMOOJP7ETG2G", "rkey: '3MMOOJP7ETG2G' is not a TID"),
    ],
)
def test_rules_beyond_the_lexicon(record: dict | None, rkey: str, reason: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        validate(record, rkey)
    assert caught.value.reason == reason


def test_a_little_clock_skew_is_fine() -> None:
    record = {**GOOD, "createdAt": "2026-05-25T20:00:00Z"}  # hours ahead of the event, within a day
    assert validate(record).created_at == "2026-05-25T20:00:00Z"
