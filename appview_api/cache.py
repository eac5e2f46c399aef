"""Pre-serialized responses, valid while the store's generation is unchanged.

The hot pages (the first discovery page above all) are asked for far more often than the index changes,
and a DuckDB query costs milliseconds where answering from memory costs microseconds. Every commit that
changes what readers see bumps `store.generation`, which empties the cache. Concurrent misses for one key
share a single computation, so a burst right after a commit runs the query once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable

Compute = Callable[[], Awaitable[bytes]]


class ResponseCache:
    def __init__(self, generation: Callable[[], int], max_bytes: int = 64 * 1024 * 1024) -> None:
        self._generation = generation
        self._max_bytes = max_bytes
        self._seen = generation()
        self._entries: dict[Hashable, bytes] = {}
        self._bytes = 0
        self._pending: dict[Hashable, asyncio.Future[bytes]] = {}

    async def get(self, key: Hashable, compute: Compute) -> bytes:
        generation = self._generation()
        if generation != self._seen:
            self._entries.clear()
            self._bytes = 0
            self._seen = generation
        body = self._entries.get(key)
        if body is not None:
            return body
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            body = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unwaited future never logs it
            raise
        else:
            future.set_result(body)
            if self._generation() == generation:
                self._store(key, body)
            return body
        finally:
            del self._pending[key]

    def _store(self, key: Hashable, body: bytes) -> None:
        while self._entries and self._bytes + len(body) > self._max_bytes:
            oldest = next(iter(self._entries))
            self._bytes -= len(self._entries.pop(oldest))
        if len(body) <= self._max_bytes:
            self._entries[key] = body
            self._bytes += len(body)
