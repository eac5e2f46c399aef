"""Serialized pages, valid while the catalog's version is unchanged.

Building a page from the catalog costs ~100 µs (views decoded, the page serialized); the hot pages (the
first discovery page above all) are asked for far more often than the catalog changes, and a stored body
costs a dictionary lookup. Any change to the catalog bumps its version, which empties the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable


class ResponseCache:
    def __init__(self, version: Callable[[], int], max_bytes: int = 64 * 1024 * 1024) -> None:
        self._version = version
        self._max_bytes = max_bytes
        self._seen = version()
        self._entries: dict[Hashable, bytes] = {}
        self._bytes = 0

    def get(self, key: Hashable, compute: Callable[[], bytes]) -> bytes:
        version = self._version()
        if version != self._seen:
            self._entries.clear()
            self._bytes = 0
            self._seen = version
        body = self._entries.get(key)
        if body is None:
            body = bytes(memoryview(compute()))  # exact size: orjson's own result can hold far more
            self._store(key, body)
        return body

    def _store(self, key: Hashable, body: bytes) -> None:
        while self._entries and self._bytes + len(body) > self._max_bytes:
            oldest = next(iter(self._entries))
            self._bytes -= len(self._entries.pop(oldest))
        if len(body) <= self._max_bytes:
            self._entries[key] = body
            self._bytes += len(body)
