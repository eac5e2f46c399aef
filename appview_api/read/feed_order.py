"""Every visible track in discovery order, by a total key: (sort_us, tiebreak), held in sorted blocks.

A sorted list of a million entries would move megabytes on each insert, and a sort per request would cost
a second; blocks of about a thousand entries keep an insert or removal to a bisect and a small move, at 24
bytes a track. The order is total: tracks with one sort_us (anyone can write records with one past
`createdAt`) are ordered by a tiebreak that is unique per track (catalog.py: a keyed hash of its URI), so
finding a page, adding and removing all cost a bisect, however many tracks tie.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator

_SPLIT = 2048

Key = tuple[int, int]  # (sort_us, tiebreak)


class FeedOrder:
    def __init__(self) -> None:
        # Ascending within a block by (sort_us, tiebreak), and block after block.
        self._sorts: list[array[int]] = []
        self._tiebreaks: list[array[int]] = []
        self._docs: list[array[int]] = []
        self._lows: list[Key] = []  # each block's first key, for bisecting to a block
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def add(self, sort_us: int, tiebreak: int, doc: int) -> None:
        key = (sort_us, tiebreak)
        if not self._sorts:
            self._sorts.append(array("q"))
            self._tiebreaks.append(array("q"))
            self._docs.append(array("q"))
            self._lows.append(key)
        block = max(bisect.bisect_right(self._lows, key) - 1, 0)
        sorts, tiebreaks, docs = self._sorts[block], self._tiebreaks[block], self._docs[block]
        at = _position(sorts, tiebreaks, key)
        sorts.insert(at, sort_us)
        tiebreaks.insert(at, tiebreak)
        docs.insert(at, doc)
        self._lows[block] = (sorts[0], tiebreaks[0])
        self._len += 1
        if len(sorts) > _SPLIT:
            half = len(sorts) // 2
            self._sorts.insert(block + 1, sorts[half:])
            self._tiebreaks.insert(block + 1, tiebreaks[half:])
            self._docs.insert(block + 1, docs[half:])
            self._lows.insert(block + 1, (sorts[half], tiebreaks[half]))
            del sorts[half:], tiebreaks[half:], docs[half:]

    def remove(self, sort_us: int, tiebreak: int, doc: int) -> None:
        key = (sort_us, tiebreak)
        block = bisect.bisect_right(self._lows, key) - 1
        if block >= 0:
            sorts, tiebreaks, docs = self._sorts[block], self._tiebreaks[block], self._docs[block]
            at = _position(sorts, tiebreaks, key)
            if at < len(sorts) and sorts[at] == sort_us and tiebreaks[at] == tiebreak and docs[at] == doc:
                del sorts[at], tiebreaks[at], docs[at]
                self._len -= 1
                if sorts:
                    self._lows[block] = (sorts[0], tiebreaks[0])
                else:
                    del self._sorts[block], self._tiebreaks[block], self._docs[block], self._lows[block]
                return
        raise KeyError((sort_us, tiebreak, doc))

    def descending(self, before: Key | None = None) -> Iterator[int]:
        """Documents from the highest key down, starting below `before` (exclusive) when it is given."""
        if not self._sorts:
            return
        if before is None:
            block = len(self._sorts) - 1
            at = len(self._sorts[block])
        else:
            block = bisect.bisect_left(self._lows, before) - 1
            if block < 0:
                return
            at = _position(self._sorts[block], self._tiebreaks[block], before)
        while block >= 0:
            docs = self._docs[block]
            for i in range(at - 1, -1, -1):
                yield docs[i]
            block -= 1
            at = len(self._docs[block]) if block >= 0 else 0


def _position(sorts: array[int], tiebreaks: array[int], key: Key) -> int:
    """Where `key` goes in a block: the first entry not below it. Entries with one sort_us sit together,
    ordered by tiebreak, so two bisects in C find it."""
    sort_us, tiebreak = key
    low = bisect.bisect_left(sorts, sort_us)
    high = bisect.bisect_right(sorts, sort_us, low)
    return bisect.bisect_left(tiebreaks, tiebreak, low, high)
