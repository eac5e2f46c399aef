"""Jetstream v1 protocol details besides the event shape: subscribe URLs, frame decoding, cursors.

Cursors are unix microseconds of the serving instance's clock (inclusive). Instances' clocks differ, so a
resume rewinds a little on the same host and more on another host; replaying is harmless because applying
an event twice changes nothing.
"""

from __future__ import annotations

import re
import time
from importlib.resources import files
from urllib.parse import urlencode, urlsplit, urlunsplit

import zstandard

from indexer.atproto.datetimes import NoTimezone, us_from_iso
from indexer.errors import InvalidCursor, MalformedEvent

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MAX_EVENT_BYTES = 2 * 1024 * 1024  # an event (decompressed) larger than this is not indexed
DICTIONARY = files(__package__) / "zstd_dictionary_v1"  # package data: present in an installed wheel too

_RELATIVE = re.compile(r"-(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d)")
_UNIT_US = {"us": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}


class OversizedFrame(MalformedEvent):
    """A frame larger than MAX_EVENT_BYTES."""


def subscribe_url(
    base: str, collections: list[str], cursor: int | None, compress: bool, max_message_bytes: int | None = None
) -> str:
    """The subscribe URL for one host, keeping any query the operator configured on it."""
    parts = urlsplit(base)
    params: list[tuple[str, str]] = [("wantedCollections", c) for c in collections]
    if cursor is not None:
        params.append(("cursor", str(max(cursor, 0))))
    if compress:
        params.append(("compress", "true"))
    if max_message_bytes is not None:
        params.append(("maxMessageSizeBytes", str(max_message_bytes)))
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/subscribe", query, ""))


class FrameDecoder:
    """Turns a websocket message into JSON bytes: zstd frames (with Jetstream's dictionary) or plain text."""

    def __init__(self, dictionary: bytes | None = None) -> None:
        data = dictionary if dictionary is not None else DICTIONARY.read_bytes()
        self._zstd = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(data))

    def decode(self, message: bytes | str) -> bytes | str:
        if isinstance(message, str) or not message.startswith(ZSTD_MAGIC):
            return message
        try:
            # max_output_size only bounds frames that do not declare their size: check the declared one.
            declared = zstandard.frame_content_size(message)
            if declared > MAX_EVENT_BYTES:
                raise OversizedFrame(f"zstd frame declares {declared} bytes, over {MAX_EVENT_BYTES}")
            return self._zstd.decompress(message, max_output_size=MAX_EVENT_BYTES)
        except zstandard.ZstdError as exc:
            raise MalformedEvent(f"bad zstd frame: {exc}") from None


def parse_cursor(value: str, now_us: int | None = None) -> int:
    """An operator's cursor: unix microseconds, an ISO 8601 time, or relative like -2h / -30m / -90s."""
    value = value.strip()
    now_us = time.time_ns() // 1000 if now_us is None else now_us
    if value.isdigit():
        return int(value)
    match = _RELATIVE.fullmatch(value)
    if match:
        return now_us - int(float(match.group(1)) * _UNIT_US[match.group(2)])
    try:
        return us_from_iso(value)
    except NoTimezone:
        raise InvalidCursor(f"{value!r} has no timezone; add Z or an offset") from None
    except ValueError:
        raise InvalidCursor(f"{value!r} is not microseconds, an ISO 8601 time or a relative time like -2h") from None
