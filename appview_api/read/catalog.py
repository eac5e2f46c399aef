"""The API's in-memory catalog: every verified, visible track, ready to page, look up and search.

A DuckDB query costs milliseconds where a page built from memory costs tens of microseconds, so every read
method answers from here; DuckDB is read only to catch up (see `sync.py`). Each visible track is one
document: a number indexing a few flat arrays, its view fields as compact JSON, its words in the search
postings and its place in the discovery order. A track that changes gets a fresh document and its old one
is retired (postings are append-only, so stale words then match nothing live); one that stops being
visible (deleted, hidden, unverified, purged) is just retired. Nothing here blocks or awaits: it changes
and is read only on the event loop, so a page never sees half an update.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable

from appview_api.read.feed_order import FeedOrder
from appview_api.read.payloads import Payloads
from appview_api.read.search import Hit, Postings, rank
from appview_api.read.views import payload
from indexer.db.rows import AccountRow, TrackRow

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

    def order(self, sort: array) -> list[tuple[int, str, int]]:
        """(sort_us, rkey, doc) ascending; kept only for large accounts, where sorting per page would show."""
        order = self._order
        if order is None:
            order = sorted((sort[doc], rkey, doc) for rkey, doc in self.tracks.items())
            if len(order) > _CACHED_ORDER:
                self._order = order
        return order

    def changed(self) -> None:
        self._order = None


class Catalog:
    def __init__(self) -> None:
        self.version = 0  # bumped by every change readers can see
        self.tracks_seen = -1  # the largest changed_us applied
        self.accounts_seen = -1
        self.accounts: list[Account] = []
        self._by_did: dict[str, int] = {}
        self._by_handle: dict[str, list[int]] = {}  # a handle two accounts briefly claim lists both
        self._account = array("i")  # doc -> account number
        self._sort = array("q")
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
            if account.handle is not None:
                self._unclaim(account.handle.lower(), number)
            account.handle, account.resolved_us = row.handle, row.resolved_us
            if row.handle is not None:
                self._by_handle.setdefault(row.handle.lower(), []).append(number)
            self.accounts_seen = max(self.accounts_seen, row.changed_us)
        self.version += 1

    def apply_tracks(self, rows: Iterable[TrackRow]) -> None:
        for row in rows:
            self._apply(row)
        self.version += 1

    def _apply(self, row: TrackRow) -> None:
        self.tracks_seen = max(self.tracks_seen, row.changed_us)
        number = self._number(row.did)
        account = self.accounts[number]
        old = account.tracks.get(row.rkey)
        if old is not None:
            if self._changed[old] == row.changed_us:
                return  # applied already
            self._retire(account, row.rkey, old)
        if not row.visible:
            return
        doc = len(self._rkey)
        self._account.append(number)
        self._sort.append(row.sort_us)
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
        account.changed()
        self._order.add(row.sort_us, doc)
        self._postings.add(doc, row.title, row.artist, row.album)

    def _retire(self, account: Account, rkey: str, doc: int) -> None:
        del account.tracks[rkey]
        account.changed()
        self._order.remove(self._sort[doc], doc)
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
        """Up to `want` documents in discovery order, (sort_us, did, rkey) descending, after `after`."""
        found: list[tuple[FeedKey, int]] = []
        for sort_us, doc in self._order.descending(None if after is None else after[0]):
            if len(found) >= want and sort_us != found[-1][0][0]:
                break  # past the page and every tie of its last row
            key = self.key(doc)
            if after is None or key < after:
                found.append((key, doc))
        found.sort(reverse=True)
        return [doc for _, doc in found[:want]]

    def actor_feed(self, account: Account, after: FeedKey | None, want: int) -> list[int]:
        order = account.order(self._sort)
        end = len(order) if after is None else bisect.bisect_left(order, (after[0], after[2]))
        return [doc for _, _, doc in reversed(order[max(end - want, 0) : end])]

    def search(self, terms: tuple[str, ...], after: Hit | None, want: int) -> tuple[list[tuple[Hit, int]], int]:
        """Up to `want` (hit, doc) pairs, best first, after `after`; and how many visible tracks match."""
        docs, scores = self._postings.match(terms)
        return rank(docs, scores, self._live, self._sort, lambda doc: self.key(doc)[1:], after, want)
