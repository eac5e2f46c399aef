"""TIDs: atproto's timestamp identifiers (record keys and commit revs).

13 characters of base32-sortable over 64 bits: a zero bit, 53 bits of microseconds since the epoch and a
10-bit clock id. String order is time order, which is why revs can be compared as strings. The SDK has no
minter, and publishing needs one: a TID minted here and written with putRecord makes retries idempotent.
"""

from __future__ import annotations

import random
import re
import threading
import time

ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
TID_RE = re.compile(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}")


def encode(micros: int, clock_id: int) -> str:
    value = (micros << 10) | (clock_id & 0x3FF)
    chars = []
    for _ in range(13):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def decode_micros(tid: str) -> int:
    value = 0
    for char in tid:
        value = (value << 5) | ALPHABET.index(char)
    return value >> 10


def is_tid(value: str) -> bool:
    return TID_RE.fullmatch(value) is not None  # not match("^...$"): `$` also matches before a final \n


class TidClock:
    """Mints strictly increasing TIDs even when called faster than the clock ticks."""

    def __init__(self, clock_id: int | None = None) -> None:
        self._clock_id = random.randrange(1024) if clock_id is None else clock_id
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            self._last = max(time.time_ns() // 1000, self._last + 1)
            return encode(self._last, self._clock_id)
