from datetime import UTC, datetime

import orjson
import pytest
import zstandard

from indexer.errors import InvalidCursor, MalformedEvent
from indexer.ingest.jetstream import DICTIONARY, FrameDecoder, OversizedFrame, parse_cursor, subscribe_url
from tests.servers.events import golden_events, shared_dir

NOW = 1_779_719_009_000_000


def test_packaged_dictionary_is_jetstreams() -> None:
    assert DICTIONARY.read_bytes() == (shared_dir() / "zstd_dictionary_v1").read_bytes()


def test_subscribe_url() -> None:
    url = subscribe_url("wss://js.example/subscribe", ["app.relay.track"], 123, compress=True)
    assert url == "wss://js.example/subscribe?wantedCollections=app.relay.track&cursor=123&compress=true"
    assert subscribe_url("ws://127.0.0.1:9/", ["a.b.c", "d.*"], None, False) == (
        "ws://127.0.0.1:9/?wantedCollections=a.b.c&wantedCollections=d.%2A"
    )
    assert subscribe_url("ws://h/subscribe?requireHello=false", ["a.b"], -5, False) == (
        "ws://h/subscribe?requireHello=false&wantedCollections=a.b&cursor=0"
    )


def test_decoder_handles_compressed_text_and_plain_bytes() -> None:
    decoder = FrameDecoder()
    compressor = zstandard.ZstdCompressor(dict_data=zstandard.ZstdCompressionDict(DICTIONARY.read_bytes()))
    for event in golden_events():
        raw = orjson.dumps(event)
        assert decoder.decode(compressor.compress(raw)) == raw
        assert decoder.decode(raw) == raw
        assert decoder.decode(raw.decode()) == raw.decode()


def test_decoder_rejects_a_corrupt_zstd_frame() -> None:
    with pytest.raises(MalformedEvent, match="bad zstd frame"):
        FrameDecoder().decode(b"\x28\xb5\x2f\xfd" + b"\x00" * 20)


def test_decoder_refuses_a_decompression_bomb() -> None:
    bomb = zstandard.ZstdCompressor().compress(b"{" + b" " * (3 * 1024 * 1024) + b"}")
    assert len(bomb) < 1024
    with pytest.raises(OversizedFrame) as caught:
        FrameDecoder().decode(bomb)
    assert caught.value.reason == "zstd frame declares 3145730 bytes, over 2097152"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1779719009132431", 1779719009132431),
        ("0", 0),
        ("-2h", NOW - 7_200_000_000),
        ("-30m", NOW - 1_800_000_000),
        ("-90s", NOW - 90_000_000),
        ("-1.5d", NOW - 129_600_000_000),
        ("-250ms", NOW - 250_000),
        ("2026-05-25T14:23:29Z", int(datetime(2026, 5, 25, 14, 23, 29, tzinfo=UTC).timestamp() * 1_000_000)),
        ("2026-05-25T16:23:29+02:00", int(datetime(2026, 5, 25, 14, 23, 29, tzinfo=UTC).timestamp() * 1_000_000)),
    ],
)
def test_parse_cursor(value: str, expected: int) -> None:
    assert parse_cursor(value, now_us=NOW) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("yesterday", "'yesterday' is not microseconds, an ISO 8601 time or a relative time like -2h"),
        ("-2y", "'-2y' is not microseconds, an ISO 8601 time or a relative time like -2h"),
        ("+2h", "'+2h' is not microseconds, an ISO 8601 time or a relative time like -2h"),
        ("", "'' is not microseconds, an ISO 8601 time or a relative time like -2h"),
        ("2026-05-25T14:23:29", "'2026-05-25T14:23:29' has no timezone; add Z or an offset"),
    ],
)
def test_bad_cursor_values(value: str, reason: str) -> None:
    with pytest.raises(InvalidCursor) as caught:
        parse_cursor(value, now_us=NOW)
    assert caught.value.reason == reason


def test_decoder_refuses_an_undeclared_size_bomb() -> None:
    compressor = zstandard.ZstdCompressor(write_content_size=False)
    bomb = compressor.compress(b" " * (3 * 1024 * 1024))
    assert zstandard.frame_content_size(bomb) == -1
    with pytest.raises(MalformedEvent, match="bad zstd frame"):
        FrameDecoder().decode(bomb)
