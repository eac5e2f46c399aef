"""The sans-I/O parts of publishing: the form spooler, the rate limiter, token claims, records and rkeys."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import orjson
import pytest

from appview_api.audio.format import AudioInfo
from appview_api.audio.storage import LocalStorage
from appview_api.errors import RequestError
from appview_api.publish.pds import token_subject
from appview_api.publish.publisher import (
    build_record,
    check_client_rkey,
    parse_track_uri,
    stored_key,
    tid_time,
    updated_record,
)
from appview_api.publish.ratelimit import RateLimiter
from appview_api.publish.upload import FormSpooler, boundary_of
from appview_api.xrpc import answer
from indexer.atproto import tid
from tests.fixtures.publish import DATA

BOUNDARY = b"relay-boundary"
MP3 = (DATA / "tone-3s.mp3").read_bytes()
DID = "did:plc:" + "a" * 24
RKEY = "3lbbbbbbbbbb2"


def answered(exc: RequestError) -> tuple[str, str, int]:
    """What the client is answered: the XRPC error name, the reason, the HTTP status."""
    name, status = answer(exc)
    return name, exc.reason, status


def part(name: str, body: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return b"--" + BOUNDARY + f"\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + body + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


def spool(body: bytes, max_file_bytes: int = 1 << 20, chunk: int = 7) -> tuple[FormSpooler, io.BytesIO]:
    """Feed `body` in small chunks, so every boundary and header is split somewhere."""
    sink = io.BytesIO()
    spooler = FormSpooler(BOUNDARY, sink, Path("/nonexistent"), max_file_bytes)
    for start in range(0, len(body), chunk):
        spooler.feed(body[start : start + chunk])
    return spooler, sink


def refusal(body: bytes, **kwargs: int) -> tuple[str, str, int]:
    with pytest.raises(RequestError) as caught:
        spooler, _ = spool(body, **kwargs)
        spooler.finish()
    return answered(caught.value)


# --- the form spooler ---------------------------------------------------------------------------------


def test_spooler_writes_the_file_and_hashes_it_while_fields_stay_text() -> None:
    spooler, sink = spool(form(part("title", "Été".encode()), part("audio", MP3, "x.mp3"), part("artist", b"A")))
    result = spooler.finish()

    assert result.fields == {"title": "Été", "artist": "A"}
    assert sink.getvalue() == MP3
    assert (result.size, result.sha256) == (len(MP3), hashlib.sha256(MP3).hexdigest())


def test_spooler_stops_at_the_first_chunk_over_the_limit() -> None:
    body = form(part("audio", MP3, "x.mp3"))
    spooler = FormSpooler(BOUNDARY, io.BytesIO(), Path("/nonexistent"), 1000)
    fed = 0
    with pytest.raises(RequestError) as caught:
        for start in range(0, len(body), 100):
            fed += 100
            spooler.feed(body[start : start + 100])
    assert answer(caught.value) == ("PayloadTooLarge", 413)
    assert caught.value.reason == "the upload is larger than 1000 bytes"
    header = body.index(b"\r\n\r\n") + 4
    assert fed == 100 * ((header + 1000) // 100 + 1)  # the chunk that crossed the limit, not one more


def test_spooler_refuses_a_file_that_does_not_start_like_audio_after_its_first_bytes() -> None:
    seen = []

    class Sink(io.BytesIO):
        def write(self, data: bytes) -> int:  # type: ignore[override]
            seen.append(len(data))
            return super().write(data)

    spooler = FormSpooler(BOUNDARY, Sink(), Path("/nonexistent"), 1 << 20)
    body = form(part("audio", b"<html>" + b"x" * 10_000, "song.mp3"))
    with pytest.raises(RequestError) as caught:
        for start in range(0, len(body), 16):
            spooler.feed(body[start : start + 16])
    assert answered(caught.value)[:2] == ("UnsupportedAudio", "not an mp3, wav, ogg or flac file")
    assert sum(seen) < 64


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (form(part("title", b"t")), "the form has no 'audio' file part"),
        (form(part("audio", MP3), part("audio", MP3)), "the form has more than one 'audio' part"),
        (form(part("title", b"a"), part("title", b"b"), part("audio", MP3)), "form field 'title' given more than once"),
        (form(part("genre", b"jazz"), part("audio", MP3)), "unknown form field 'genre'"),
        (form(part("title", b"x" * 4097), part("audio", MP3)), "form field 'title' is longer than 4096 bytes"),
        (form(part("title", b"\xff\xfe"), part("audio", MP3)), "form field 'title' is not UTF-8 text"),
        (part("audio", MP3), "malformed multipart body: it ends before its closing boundary"),
        (
            b"--" + BOUNDARY + b"\r\nContent-Type: text/plain\r\n\r\nx\r\n--" + BOUNDARY + b"--\r\n",
            "a form part has no Content-Disposition: form-data name",
        ),
    ],
)
def test_spooler_refuses_malformed_forms(body: bytes, reason: str) -> None:
    assert refusal(body) == ("InvalidRequest", reason, 400)


def test_spooler_refuses_an_empty_file_part() -> None:
    assert refusal(form(part("audio", b""))) == ("UnsupportedAudio", "the file is empty", 400)


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "multipart/form-data", "multipart/mixed; boundary=x"],
)
def test_only_multipart_form_data_with_a_boundary_is_accepted(content_type: str | None) -> None:
    with pytest.raises(RequestError) as caught:
        boundary_of(content_type)
    assert caught.value.reason == "the body must be multipart/form-data with a boundary"


# --- the rate limiter -----------------------------------------------------------------------------------


def test_rate_limiter_allows_a_minutes_burst_then_says_how_long_to_wait() -> None:
    now = [1000.0]
    limiter = RateLimiter(3, clock=lambda: now[0])

    assert [limiter.acquire("a") for _ in range(3)] == [None, None, None]
    assert limiter.acquire("a") == 20  # one token every 20 s
    assert limiter.acquire("b") is None  # per account
    now[0] += 20
    assert limiter.acquire("a") is None
    assert limiter.acquire("a") == 20


def test_rate_limiter_forgets_accounts_whose_buckets_refilled() -> None:
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    for n in range(100):
        limiter.acquire(f"did:{n}")
    now[0] += 61
    limiter.acquire("did:new")
    assert list(limiter._buckets) == ["did:new"]


# --- token claims -----------------------------------------------------------------------------------------


def jwt(claims: dict[str, object]) -> str:
    payload = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    return f"eyJhbGciOiJFUzI1NksifQ.{payload}.c2ln"


@pytest.mark.parametrize(
    ("token", "name", "reason"),
    [
        ("not-a-jwt", "AuthRequired", "the bearer token is not a JWT"),
        ("a.!!!.c", "AuthRequired", "the bearer token is not a JWT"),
        (jwt({"scope": "x"}), "AuthRequired", "the bearer token names no DID"),
        (jwt({"sub": "alice"}), "AuthRequired", "the bearer token names no DID"),
        (jwt({"sub": DID, "exp": 999}), "ExpiredToken", "the access token has expired: refresh the session"),
    ],
)
def test_token_claims_are_refused_before_any_request(token: str, name: str, reason: str) -> None:
    with pytest.raises(RequestError) as caught:
        token_subject(token, now=1000.0)
    assert answered(caught.value) == (name, reason, 401)


def test_token_subject_is_the_claimed_did() -> None:
    assert token_subject(jwt({"sub": DID, "exp": 2000}), now=1000.0) == DID


# --- records and rkeys --------------------------------------------------------------------------------------

INFO = AudioInfo("mp3", "audio/mpeg", 3)
URL = "https://audio.relay.test/" + "a" * 64 + ".mp3"


def test_record_takes_its_created_at_from_the_rkey_so_a_retry_builds_the_same_record() -> None:
    fields = {"title": "T", "artist": "A", "album": "  "}
    first = build_record(fields, INFO, URL, RKEY)

    assert first == build_record(dict(fields), INFO, URL, RKEY)
    assert first == {
        "$type": "app.relay.track",
        "title": "T",
        "artist": "A",
        "audioUrl": URL,
        "fileType": "mp3",
        "duration": 3,
        "createdAt": tid_time(RKEY),
    }


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"artist": "A"}, "missing required property title"),
        ({"title": "T"}, "missing required property artist"),
        ({"title": "é" * 141, "artist": "A"}, "is longer (282) than maxLength 280"),
        ({"title": "T", "artist": "A", "album": "x" * 281}, "is longer (281) than maxLength 280"),
        ({"title": "  ", "artist": "A"}, "title must not be blank"),
        ({"title": "T", "artist": ""}, "artist must not be blank"),
    ],
)
def test_record_rules(fields: dict[str, str], reason: str) -> None:
    with pytest.raises(RequestError) as caught:
        build_record(fields, INFO, URL, RKEY)
    assert answer(caught.value) == ("InvalidRequest", 400)
    assert caught.value.reason.endswith(reason)


def test_update_replaces_only_the_given_fields_and_null_drops_the_album() -> None:
    current = build_record({"title": "T", "artist": "A", "album": "B"}, INFO, URL, RKEY)

    assert updated_record(current, {"uri": "x", "title": "New"}) == {**current, "title": "New"}
    assert "album" not in updated_record(current, {"uri": "x", "album": None})
    with pytest.raises(RequestError):
        updated_record(current, {"uri": "x", "artist": None})


def test_client_rkeys_must_be_recent_tids() -> None:
    now = 1_800_000_000.0
    fresh = tid.encode(int((now - 60) * 1_000_000), 1)

    assert check_client_rkey(fresh, now=now) == fresh
    for bad, reason in [
        ("hello", "rkey 'hello' is not a TID"),
        (tid.encode(int((now - 90_000) * 1_000_000), 1), "rkey must be a TID minted within the last 24 hours"),
        (tid.encode(int((now + 600) * 1_000_000), 1), "rkey must be a TID minted within the last 24 hours"),
    ]:
        with pytest.raises(RequestError) as caught:
            check_client_rkey(bad, now=now)
        assert caught.value.reason == reason


@pytest.mark.parametrize(
    "uri",
    [
        "https://example.test/x",
        f"at://{DID}/app.bsky.feed.post/{RKEY}",
        f"at://{DID}/app.relay.track/not-a-tid",
        f"at://{DID}/app.relay.track/{RKEY}/extra",
    ],
)
def test_only_track_uris_name_a_track(uri: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_track_uri(uri)
    assert caught.value.reason.endswith("is not the at:// URI of an app.relay.track record")


def test_stored_key_only_for_urls_this_service_serves() -> None:
    storage = LocalStorage(Path("/nonexistent"), "https://appview.relay.test")
    key = "b" * 64 + ".flac"

    assert parse_track_uri(f"at://{DID}/app.relay.track/{RKEY}") == (DID, RKEY)
    assert stored_key(storage, f"https://appview.relay.test/audio/{key}") == key
    assert stored_key(storage, f"https://cdn.elsewhere.test/audio/{key}") is None
    assert stored_key(storage, "https://appview.relay.test/audio/not-a-key.mp3") is None
    assert stored_key(storage, None) is None
