"""The API's in-memory catalog: every verified, visible track, ready to page, look up and search.

A DuckDB query costs milliseconds where a page built from memory costs tens of microseconds, so every read
method answers from here; DuckDB is read only to catch up (see `sync.py`). Each visible track is one
document: a number indexing a few flat arrays, its view fields as compact JSON, its words in the search
postings and its place in the discovery order. A track that changes gets a fresh document and its old one
is retired (postings are append-only, so stale words then match nothing live); one that stops being
visible (deleted, hidden, unverified, purged) is just retired. Nothing here blocks or awaits: it changes
and is read only on the event loop, so a page never sees half an update.

Orders are total, so that a page, an insert and a removal cost the same however many tracks share a
sort_us (anyone can write records with one past `createdAt`): discovery and search break ties by a keyed
hash of the track's URI (the tiebreak), an account's own list by its record keys.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from array import array
from collections.abc import Iterable

from appview_api.read.feed_order import FeedOrder
from appview_api.read.payloads import Payloads
from appview_api.read.search import Hit, Postings, rank
from appview_api.read.views import payload
from indexer.db.rows import AccountRow, TrackRow
from indexer.net.identity import INVALID_HANDLE

FeedKey = tuple[int, str, str]  # sort_us, did, rkey: the discovery and actor cursors' key
_CACHED_ORDER = 256  # accounts with more tracks than this keep their sorted order between requests


class Account:
    __slots__ = ("_order", "did", "handle", "resolved_us", "tracks")

    def __init__(self, did: str) -> None:
        self.did = did
        self.handle: str | None = None
        self.resolved_us = 0
        self.tracks: dict[str, int] = {}  # rkey -> doc, visible tracks only
        self._order: list[tuple[int, str, int]] | None = None

    def order(self, sort: array[int]) -> list[tuple[int, str, int]]:
        """(sort_us, rkey, doc) ascending; kept only for large accounts, where sorting per page would show,
        and then kept up to date a bisect at a time."""
        order = self._order
        if order is None:
            order = sorted((sort[doc], rkey, doc) for rkey, doc in self.tracks.items())
            if len(order) > _CACHED_ORDER:
                self._order = order
        return order

    def added(self, sort_us: int, rkey: str, doc: int) -> None:
        if self._order is not None:
            bisect.insort(self._order, (sort_us, rkey, doc))

    def retired(self, sort_us: int, rkey: str, doc: int) -> None:
        if self._order is not None:
            del self._order[bisect.bisect_left(self._order, (sort_us, rkey, doc))]


class Catalog:
    def __init__(self, tiebreak_key: bytes = b"") -> None:
        """`tiebreak_key`: a secret (the cursor secret), so that nobody can pick URIs whose tiebreaks collide."""
        self._tiebreak_key = hashlib.sha256(tiebreak_key).digest()
        self.version = 0  # bumped by every change readers can see
        self.tracks_seen = -1  # the largest changed_us applied
        self.accounts_seen = -1
        self.accounts: list[Account] = []
        self._by_did: dict[str, int] = {}
        self._by_handle: dict[str, list[int]] = {}  # a handle two accounts briefly claim lists both
        self._account = array("i")  # doc -> account number
        self._sort = array("q")
        self._tiebreak = array("q")
        self._changed = array("q")
        self._live = bytearray()
        self._rkey: list[str | None] = []
        self._payloads = Payloads()
        self._postings = Postings()
        self._order = FeedOrder()

    def __len__(self) -> int:
        return len(self._order)

    # -- changes -------------------------------------------------------------------------------------

    def apply_accounts(self, rows: Iterable[AccountRow]) -> None:
        for row in rows:
            number = self._number(row.did)
            account = self.accounts[number]
            old = _findable(account.handle)
            if old is not None:
                self._unclaim(old, number)
            account.handle, account.resolved_us = row.handle, row.resolved_us
            new = _findable(row.handle)
            if new is not None:
                self._by_handle.setdefault(new, []).append(number)
            self.accounts_seen = max(self.accounts_seen, row.changed_us)
        self.version += 1

    def apply_tracks(self, rows: Iterable[TrackRow]) -> None:
        changed = False
        for row in rows:
            changed |= self._apply(row)
        if changed:
            self.version += 1

    def tiebreak(self, did: str, rkey: str) -> int:
        digest = hashlib.blake2b(f"{did}/{rkey}".encode(), key=self._tiebreak_key, digest_size=8).digest()
        return int.from_bytes(digest) >> 1  # 63 bits: an int64

    def _apply(self, row: TrackRow) -> bool:
        """Whether the row changed anything readers see."""
        self.tracks_seen = max(self.tracks_seen, row.changed_us)
        number = self._number(row.did)
        account = self.accounts[number]
        old = account.tracks.get(row.rkey)
        if old is not None:
            if self._changed[old] == row.changed_us:
                return False  # applied already
            self._retire(account, row.rkey, old)
        if not row.visible:
            return old is not None
        doc = len(self._rkey)
        tiebreak = self.tiebreak(row.did, row.rkey)
        self._account.append(number)
        self._sort.append(row.sort_us)
        self._tiebreak.append(tiebreak)
        self._changed.append(row.changed_us)
        self._live.append(1)
        self._rkey.append(row.rkey)
        self._payloads.append(
            payload(
                row.cid,
                row.title,
                row.artist,
                row.album,
                row.audio_url,
                row.file_type,
                row.duration,
                row.created_at,
                row.indexed_us,
            )
        )
        account.tracks[row.rkey] = doc
        account.added(row.sort_us, row.rkey, doc)
        self._order.add(row.sort_us, tiebreak, doc)
        self._postings.add(doc, row.title, row.artist, row.album)
        return True

    def _retire(self, account: Account, rkey: str, doc: int) -> None:
        del account.tracks[rkey]
        account.retired(self._sort[doc], rkey, doc)
        self._order.remove(self._sort[doc], self._tiebreak[doc], doc)
        self._live[doc] = 0
        self._rkey[doc] = None
        self._payloads.retire(doc)

    def _number(self, did: str) -> int:
        number = self._by_did.get(did)
        if number is None:
            number = self._by_did[did] = len(self.accounts)
            self.accounts.append(Account(did))
        return number

    def _unclaim(self, handle: str, number: int) -> None:
        claims = self._by_handle[handle]
        claims.remove(number)
        if not claims:
            del self._by_handle[handle]

    # -- reads ---------------------------------------------------------------------------------------

    def account(self, actor: str) -> Account | None:
        """An indexed account named by DID or by handle (any case); of two claiming one handle, the one
        resolved last."""
        if actor.startswith("did:"):
            number = self._by_did.get(actor)
            if number is None:
                number = self._by_did.get(actor.lower())
            return None if number is None else self.accounts[number]
        claims = self._by_handle.get(actor.lower())
        if not claims:
            return None
        return max((self.accounts[number] for number in claims), key=lambda account: account.resolved_us)

    def view(self, doc: int) -> tuple[str, str | None, str, bytes]:
        """(did, handle, rkey, payload) of a live document."""
        account = self.accounts[self._account[doc]]
        return account.did, account.handle, self._rkey[doc], self._payloads[doc]  # type: ignore[return-value]  # live: set

    def key(self, doc: int) -> FeedKey:
        return self._sort[doc], self.accounts[self._account[doc]].did, self._rkey[doc]  # type: ignore[return-value]  # live: set

    def feed(self, after: FeedKey | None, want: int) -> list[int]:
        """Up to `want` documents in discovery order, (sort_us, tiebreak) descending, after `after`."""
        before = None if after is None else (after[0], self.tiebreak(after[1], after[2]))
        return list(itertools.islice(self._order.descending(before), want))

    def actor_feed(self, account: Account, after: FeedKey | None, want: int) -> list[int]:
        order = account.order(self._sort)
        end = len(order) if after is None else bisect.bisect_left(order, (after[0], after[2]))
        return [doc for _, _, doc in reversed(order[max(end - want, 0) : end])]

    def search(self, terms: tuple[str, ...], after: Hit | None, want: int) -> tuple[list[tuple[Hit, int]], int]:
        """Up to `want` (hit, doc) pairs, best first, after `after`; and how many visible tracks match."""
        docs, scores = self._postings.match(terms)
        edge = None if after is None else (after[0], after[1], self.tiebreak(after[2], after[3]))
        found, total = rank(docs, scores, self._live, self._sort, self._tiebreak, edge, want)
        return [(self._hit(score, doc), doc) for score, doc in found], total

    def _hit(self, score: int, doc: int) -> Hit:
        sort_us, did, rkey = self.key(doc)
        return Hit(score, sort_us, did, rkey)


def _findable(handle: str | None) -> str | None:
    """The key `actor=` finds a handle by: only one that resolved back to its DID (the indexer stores
    `handle.invalid` for one that did not, and shows it, as Bluesky does)."""
    return None if handle is None or handle == INVALID_HANDLE else handle.lower()

