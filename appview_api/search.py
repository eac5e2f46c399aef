"""Search: the terms of a query, and a word-prefix index over every track, held in the API process.

DuckDB has no full-text index offline (`LOAD fts` fails) and a substring scan of 1M titles, artists and
albums costs 100 ms or more per query, so the API keeps its own inverted index: each word of a track's
title, artist and album points at the track. A query term matches a track when it starts one of its
words (terms shorter than three characters must be whole words: their prefix sets are huge and rarely
meant). The index holds no visibility: callers fetch the ranked candidates from DuckDB, which filters
them, so hidden or unverified tracks can never leak through it.

It catches up from `tracks.changed_us` (set by every upsert) whenever the store's generation moves. An
update gives the track a fresh document number and retires the old one, so stale words never match.
"""

from __future__ import annotations

import bisect
import re
import threading
from array import array
from collections.abc import Iterable
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from appview_api.xrpc import invalid

MAX_TERMS = 8
MIN_PREFIX = 3
# A term counts once, by its best place: the title's first word, elsewhere in the title, artist, album.
_WEIGHTS = (5, 4, 2, 1)
_TITLE_FIRST, _TITLE, _ARTIST, _ALBUM = range(4)
_WORD = re.compile(r"\w+")
_NONE: list[array | None] = [None, None, None, None]
_SORT_BITS = 53  # sort_us (micros since 1970) stays below 2**53 until the year 2255


def terms(q: str) -> tuple[str, ...]:
    """Lowercased words of `q`, de-duplicated in first-seen order; 400 if none or too many."""
    found = tuple(dict.fromkeys(_WORD.findall(q.lower())))
    if not found:
        raise invalid("q has no search terms")
    if len(found) > MAX_TERMS:
        raise invalid(f"q has {len(found)} terms; at most {MAX_TERMS} are allowed")
    return found


class Hit(NamedTuple):
    """A candidate in result order (all fields descending): also the search cursor's key."""

    score: int
    sort_us: int
    did: str
    rkey: str


class IndexRow(NamedTuple):
    did: str
    rkey: str
    deleted: bool
    title: str | None
    artist: str | None
    album: str | None
    sort_us: int
    changed_us: int


class SearchIndex:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._postings: dict[str, list[array | None]] = {}  # word -> docs, one array per place
        self._words: list[str] = []  # sorted, rebuilt lazily after new words arrive
        self._words_stale = False
        self._docs: dict[tuple[str, str], int] = {}
        self._keys: list[tuple[str, str]] = []  # doc -> (did, rkey)
        self._live = bytearray()  # doc -> 0 once retired
        self._sort = array("q")
        self._changed = array("q")
        self._dids: dict[str, str] = {}  # one string object per account
        self.watermark = 0  # the largest changed_us applied

    def __len__(self) -> int:
        return len(self._docs)

    def apply(self, rows: Iterable[IndexRow]) -> None:
        with self._lock:
            for row in rows:
                self._apply(row)

    def _apply(self, row: IndexRow) -> None:
        self.watermark = max(self.watermark, row.changed_us)
        key = (self._dids.setdefault(row.did, row.did), row.rkey)
        old = self._docs.get(key)
        if old is not None:
            if self._changed[old] == row.changed_us:
                return  # seen already (catch-up reads overlap on purpose)
            self._live[old] = 0
            del self._docs[key]
        if row.deleted:
            return
        doc = len(self._keys)
        self._keys.append(key)
        self._live.append(1)
        self._sort.append(row.sort_us)
        self._changed.append(row.changed_us)
        self._docs[key] = doc
        for place, text in ((_TITLE, row.title), (_ARTIST, row.artist), (_ALBUM, row.album)):
            for position, word in enumerate(_WORD.findall(text.lower()) if text else ()):
                places = self._postings.get(word)
                if places is None:
                    places = self._postings[word] = [None, None, None, None]
                    self._words_stale = True
                spot = _TITLE_FIRST if place == _TITLE and position == 0 else place
                docs = places[spot]
                if docs is None:
                    docs = places[spot] = array("q")
                docs.append(doc)

    def search(self, terms: tuple[str, ...], after: Hit | None, limit: int) -> tuple[list[Hit], int]:
        """The best `limit` live documents matching all terms after `after`, and how many match in all."""
        with self._lock:
            if self._words_stale:
                self._words = sorted(self._postings)
                self._words_stale = False
            scores: dict[int, int] | None = None
            for term in terms:
                best = self._matches(term)
                if scores is None:
                    scores = best
                else:
                    scores = {doc: score + best[doc] for doc, score in scores.items() if doc in best}
                if not scores:
                    return [], 0
            return self._top(scores or {}, after, limit)

    def _top(self, scores: dict[int, int], after: Hit | None, limit: int) -> tuple[list[Hit], int]:
        """Rank by (score, sort_us) packed into one int64, vectorized with Arrow over zero-copy views of
        the per-document arrays (a Python loop here cost ~1 µs a match, 5 ms for a common word); only the
        few documents on the page or tied with its last one become Hits, ordered in full by (did, rkey)."""
        docs = pa.array(scores.keys(), pa.int64())
        live = pc.take(_view(self._live, pa.uint8()), docs)
        weights = pc.shift_left(pa.array(scores.values(), pa.int64()), _SORT_BITS)
        packed = pc.add(weights, pc.take(_view(self._sort, pa.int64()), docs))
        keep = pc.not_equal(live, 0)
        if after is not None:
            keep = pc.and_(keep, pc.less_equal(packed, after[0] << _SORT_BITS | after[1]))
        docs, packed = docs.filter(keep), packed.filter(keep)
        if after is not None:  # the tie group at the cursor: drop what the cursor already passed
            tied = pc.equal(packed, after[0] << _SORT_BITS | after[1])
            passed = [doc for doc in docs.filter(tied).to_pylist() if self._keys[doc] >= (after[2], after[3])]
            if passed:
                keep = pc.invert(pc.is_in(docs, pa.array(passed, pa.int64())))
                docs, packed = docs.filter(keep), packed.filter(keep)
        if len(docs) == 0:
            return [], 0
        best = pc.select_k_unstable(packed, min(limit, len(packed)), [("packed", "descending")])
        edge = pc.min(pc.take(packed, best))
        chosen = docs.filter(pc.greater_equal(packed, edge)).to_pylist()
        sort, keys = self._sort, self._keys
        hits = sorted((Hit(scores[doc], sort[doc], *keys[doc]) for doc in chosen), reverse=True)
        return hits[:limit], len(docs)

    def _matches(self, term: str) -> dict[int, int]:
        """doc -> weight of the best place where `term` starts a word."""
        words = [term] if len(term) < MIN_PREFIX else self._prefixed(term)
        best: dict[int, int] = {}
        for place in (_ALBUM, _ARTIST, _TITLE, _TITLE_FIRST):  # rising weight: the best place is written last
            for word in words:
                docs = self._postings.get(word, _NONE)[place]
                if docs:
                    best.update(dict.fromkeys(docs, _WEIGHTS[place]))
        return best

    def _prefixed(self, term: str) -> list[str]:
        start = bisect.bisect_left(self._words, term)
        end = bisect.bisect_left(self._words, term + "\U0010ffff", start)
        return self._words[start:end]


def _view(buffer: array | bytearray, kind: pa.DataType) -> pa.Array:
    """An Arrow array over the buffer's memory, no copy: valid while the caller holds the index lock."""
    return pa.Array.from_buffers(kind, len(buffer), [None, pa.py_buffer(buffer)])
