"""Search: the terms of a query, a word-prefix index over documents, and ranking.

DuckDB has no full-text index offline (`LOAD fts` fails) and a substring scan of 1M titles, artists and
albums costs 100 ms or more per query, so the API keeps its own inverted index: each word of a track's
title, artist and album points at the track's document number. A query term matches a document when it
starts one of its words (terms shorter than three characters must be whole words: their prefix sets are
huge and rarely meant). The postings know nothing of visibility: the catalog retires a document (its
`live` byte goes to 0) when the track changes or disappears, and ranking skips retired documents.
"""

from __future__ import annotations

import bisect
import re
from array import array
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from appview_api.errors import InvalidRequest

MAX_TERMS = 8
MIN_PREFIX = 3
# A term counts once, by its best place: the title's first word, elsewhere in the title, artist, album.
_WEIGHTS = (5, 4, 2, 1)
_TITLE_FIRST, _TITLE, _ARTIST, _ALBUM = range(4)
_WORD = re.compile(r"\w+")
_NONE: list[array | None] = [None, None, None, None]
_SORT_BITS = 53  # sort_us (micros since 1970) stays below 2**53 until the year 2255
_EMPTY = pa.array([], pa.int64())


def terms(q: str) -> tuple[str, ...]:
    """Lowercased words of `q`, de-duplicated in first-seen order; 400 if none or too many."""
    found = tuple(dict.fromkeys(_WORD.findall(q.lower())))
    if not found:
        raise InvalidRequest("q has no search terms")
    if len(found) > MAX_TERMS:
        raise InvalidRequest(f"q has {len(found)} terms; at most {MAX_TERMS} are allowed")
    return found


class Hit(NamedTuple):
    """A match in result order (all fields descending): also the search cursor's key."""

    score: int
    sort_us: int
    did: str
    rkey: str


class Postings:
    def __init__(self) -> None:
        self._postings: dict[str, list[array | None]] = {}  # word -> docs, one array per place
        self._words: list[str] = []  # sorted, rebuilt lazily after new words arrive
        self._words_stale = False

    def add(self, doc: int, title: str | None, artist: str | None, album: str | None) -> None:
        for place, text in ((_TITLE, title), (_ARTIST, artist), (_ALBUM, album)):
            for position, word in enumerate(_WORD.findall(text.lower()) if text else ()):
                places = self._postings.get(word)
                if places is None:
                    places = self._postings[word] = [None, None, None, None]
                    self._words_stale = True
                spot = _TITLE_FIRST if place == _TITLE and position == 0 else place
                docs = places[spot]
                if docs is None:
                    docs = places[spot] = array("i")
                docs.append(doc)

    def match(self, terms: tuple[str, ...]) -> tuple[pa.Array, pa.Array]:
        """(docs, summed weights) of the documents, live or not, where every term starts a word.

        Vectorized with Arrow over zero-copy views of the posting arrays: dictionaries of matches cost
        ~1 µs a match in Python, 3 ms for a term matching 25k tracks."""
        if self._words_stale:
            self._words = sorted(self._postings)
            self._words_stale = False
        docs, scores = _EMPTY, _EMPTY
        for number, term in enumerate(terms):
            found, weights = self._best(term)
            if number == 0:
                docs, scores = found, weights
            else:
                at = pc.index_in(docs, value_set=found)
                both = pc.is_valid(at)
                docs, scores = docs.filter(both), pc.add(scores.filter(both), pc.take(weights, at.filter(both)))
            if len(docs) == 0:
                break
        return docs, scores

    def _best(self, term: str) -> tuple[pa.Array, pa.Array]:
        """Each document where `term` starts a word, once, with the weight of its best place."""
        words = [term] if len(term) < MIN_PREFIX else self._prefixed(term)
        chunks: list[pa.Array] = []
        weights: list[pa.Array] = []
        for place, weight in enumerate(_WEIGHTS):  # best place first, so a document's first sighting wins
            size = 0
            for word in words:
                docs = self._postings.get(word, _NONE)[place]
                if docs:
                    chunks.append(_view(docs, pa.int32()))
                    size += len(docs)
            if size:
                weights.append(pa.repeat(pa.scalar(weight, pa.int64()), size))
        if not chunks:
            return _EMPTY, _EMPTY
        every = pa.concat_arrays(chunks)
        unique = pc.unique(every)
        return unique, pc.take(pa.concat_arrays(weights), pc.index_in(unique, value_set=every))

    def _prefixed(self, term: str) -> list[str]:
        start = bisect.bisect_left(self._words, term)
        end = bisect.bisect_left(self._words, term + "\U0010ffff", start)
        return self._words[start:end]


def rank(
    docs: pa.Array,
    scores: pa.Array,
    live: bytearray,
    sort: array[int],
    tiebreak: array[int],
    after: tuple[int, int, int] | None,
    limit: int,
) -> tuple[list[tuple[int, int]], int]:
    """The best `limit` live documents after `after` as (score, doc), and how many live ones match in all.

    The order is total: (score, sort_us) packed into one int64, then the document's tiebreak, all
    descending, over zero-copy views of the per-document arrays; `after` is that key of the last hit shown.
    No step walks the documents that tie with the page's edge, so ties cost nothing extra."""
    if len(docs) == 0:
        return [], 0
    keep = pc.not_equal(pc.take(_view(live, pa.uint8()), docs), 0)
    packed = pc.add(pc.shift_left(scores, _SORT_BITS), pc.take(_view(sort, pa.int64()), docs))
    breaks = pc.take(_view(tiebreak, pa.int64()), docs)
    docs, packed, breaks = docs.filter(keep), packed.filter(keep), breaks.filter(keep)
    total = len(docs)
    if after is not None:
        edge = after[0] << _SORT_BITS | after[1]
        below = pc.or_(pc.less(packed, edge), pc.and_(pc.equal(packed, edge), pc.less(breaks, after[2])))
        docs, packed, breaks = docs.filter(below), packed.filter(below), breaks.filter(below)
    if len(docs) == 0:
        return [], total
    table = pa.table({"packed": packed, "tiebreak": breaks, "doc": docs})
    best = pc.select_k_unstable(table, min(limit, len(table)), [("packed", "descending"), ("tiebreak", "descending")])
    chosen = table.take(best).to_pydict()
    ranked = sorted(zip(chosen["packed"], chosen["tiebreak"], chosen["doc"], strict=True), reverse=True)
    return [(value >> _SORT_BITS, doc) for value, _, doc in ranked], total


def _view(buffer: array | bytearray, kind: pa.DataType) -> pa.Array:
    """An Arrow array over the buffer's memory, no copy: valid until the buffer next grows, so only within
    one synchronous call on the event loop, the only place the catalog changes."""
    return pa.Array.from_buffers(kind, len(buffer), [None, pa.py_buffer(buffer)])
