"""Concurrency capped per key (a host, an object key), with no memory of keys nobody is using.

A stream of strangers' hosts or keys must not grow a map forever, so each key's semaphore exists only
while someone holds or waits for it. A limit of 1 makes it a lock per key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class KeyedSlots(Generic[K]):
    def __init__(self, limit: int = 1) -> None:
        self._limit = limit
        self._slots: dict[K, tuple[asyncio.Semaphore, list[int]]] = {}

    def __len__(self) -> int:
        return len(self._slots)

    @contextlib.asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        entry = self._slots.get(key)
        if entry is None:
            entry = self._slots[key] = (asyncio.Semaphore(self._limit), [0])
        semaphore, users = entry
        users[0] += 1
        try:
            async with semaphore:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._slots[key]
