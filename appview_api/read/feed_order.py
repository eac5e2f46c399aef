"""Every visible track in discovery order, held as (sort_us, doc) pairs in sorted blocks.

A sorted list of a million entries would move megabytes on each insert, and a sort per request would cost
a second; blocks of about a thousand pairs keep an insert or removal to a bisect and a small move, at 16
bytes a track. Equal sort_us values keep insertion order here: the caller orders such ties by (did, rkey),
which only it knows.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator

_SPLIT = 2048


class FeedOrder:
    def __init__(self) -> None:
        self._sorts: list[array] = []  # ascending within a block, and block after block
        self._docs: list[array] = []
        self._lows: list[int] = []  # each block's first sort_us, for bisecting to a block
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def add(self, sort_us: int, doc: int) -> None:
        if not self._sorts:
            self._sorts.append(array("q"))
            self._docs.append(array("q"))
            self._lows.append(sort_us)
        block = max(bisect.bisect_right(self._lows, sort_us) - 1, 0)
        sorts, docs = self._sorts[block], self._docs[block]
        at = bisect.bisect_right(sorts, sort_us)
        sorts.insert(at, sort_us)
        docs.insert(at, doc)
        self._lows[block] = sorts[0]
        self._len += 1
        if len(sorts) > _SPLIT:
            half = len(sorts) // 2
            self._sorts.insert(block + 1, sorts[half:])
            self._docs.insert(block + 1, docs[half:])
            self._lows.insert(block + 1, sorts[half])
            del sorts[half:], docs[half:]

    def remove(self, sort_us: int, doc: int) -> None:
        """Drop one pair; a tie run may span blocks, so every block that can hold sort_us is looked in."""
        block = max(bisect.bisect_left(self._lows, sort_us) - 1, 0)
        while block < len(self._sorts) and self._lows[block] <= sort_us:
            sorts, docs = self._sorts[block], self._docs[block]
            for at in range(bisect.bisect_left(sorts, sort_us), bisect.bisect_right(sorts, sort_us)):
                if docs[at] == doc:
                    del sorts[at], docs[at]
                    self._len -= 1
                    if sorts:
                        self._lows[block] = sorts[0]
                    else:
                        del self._sorts[block], self._docs[block], self._lows[block]
                    return
            block += 1
        raise KeyError((sort_us, doc))

    def descending(self, at_most: int | None = None) -> Iterator[tuple[int, int]]:
        """(sort_us, doc) pairs from the highest sort_us down, starting at `at_most` (inclusive)."""
        if not self._sorts:
            return
        if at_most is None:
            block = len(self._sorts) - 1
            at = len(self._sorts[block])
        else:
            block = max(bisect.bisect_right(self._lows, at_most) - 1, 0)
            at = bisect.bisect_right(self._sorts[block], at_most)
        while block >= 0:
            sorts, docs = self._sorts[block], self._docs[block]
            for i in range(at - 1, -1, -1):
                yield sorts[i], docs[i]
            block -= 1
            at = len(self._sorts[block]) if block >= 0 else 0
