"""The XRPC methods: a table from NSID to a short handler over `queries.py`.

Handlers return the serialized body, so the response cache can keep it as is. Their SQL runs in a small
thread pool, one DuckDB cursor per thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import orjson

from appview_api import queries, search
from appview_api.cache import ResponseCache
from appview_api.pagination import CursorCodec
from appview_api.searcher import Searcher
from appview_api.views import TrackRow, track_view
from appview_api.xrpc import Method, invalid, method
from indexer.events import TRACK_COLLECTION
from indexer.store import Store

T = TypeVar("T")

FEED = "app.relay.feed.getTracks"
ACTOR = "app.relay.actor.getTracks"
TRACK = "app.relay.track.getTrack"
SEARCH = "app.relay.feed.searchTracks"

_FEED_KEY = (int, str, str)
_SEARCH_KEY = (int, int, str, str)  # a search.Hit


class Api:
    """What every handler needs: the store's readers, the cursor codec and the response cache."""

    def __init__(self, store: Store, codec: CursorCodec, pool: ThreadPoolExecutor) -> None:
        self.store = store
        self.codec = codec
        self.pool = pool
        self.cache = ResponseCache(lambda: store.generation)
        self.searcher = Searcher(store)

    async def db(self, query: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, partial(self._call, query, *args))

    def _call(self, query: Callable[..., T], *args: Any) -> T:
        return query(self.store.reader(), *args)


Handler = Callable[[Api, Method, dict[str, Any]], Awaitable[bytes]]


async def feed_get_tracks(api: Api, m: Method, p: dict[str, Any]) -> bytes:
    async def compute() -> bytes:
        after = _decode(api, m.nsid, p.get("cursor"), _FEED_KEY)
        page = await api.db(_with_handles(queries.feed_page), p["limit"] + 1, after)
        return _page(api, m.nsid, page, p["limit"], _feed_key)

    return await api.cache.get((m.nsid, p["limit"], p.get("cursor")), compute)


async def actor_get_tracks(api: Api, m: Method, p: dict[str, Any]) -> bytes:
    actor = p["actor"].lower()
    scope = f"{m.nsid}|{actor}"

    async def compute() -> bytes:
        after = _decode(api, scope, p.get("cursor"), _FEED_KEY)
        page = await api.db(_actor_page, actor, p["limit"] + 1, after)
        if page is None:
            raise m.error("ActorNotFound", f"no indexed account {p['actor']!r}", 400)
        return _page(api, scope, page, p["limit"], _feed_key)

    return await api.cache.get((m.nsid, actor, p["limit"], p.get("cursor")), compute)


async def track_get_track(api: Api, m: Method, p: dict[str, Any]) -> bytes:
    repo, rkey = _split_uri(p["uri"])

    async def compute() -> bytes:
        page = await api.db(_one_track, repo, rkey)
        if page is None or not page[0]:
            raise m.error("TrackNotFound", f"no visible track at {p['uri']}", 404)
        rows, names = page
        return orjson.dumps({"track": track_view(rows[0], names.get(rows[0].did))})

    return await api.cache.get((m.nsid, repo.lower(), rkey), compute)


async def feed_search_tracks(api: Api, m: Method, p: dict[str, Any]) -> bytes:
    terms = search.terms(p["q"])
    scope = f"{m.nsid}|{' '.join(terms)}"

    async def compute() -> bytes:
        after = _decode(api, scope, p.get("cursor"), _SEARCH_KEY)
        hits, visible, names, exact = await api.db(api.searcher.page, terms, after, p["limit"] + 1)
        rows = [visible[hit.did, hit.rkey] for hit in hits]
        by_key = {(hit.did, hit.rkey): hit for hit in hits}
        body = _page_dict(api, scope, (rows, names), p["limit"], lambda row: tuple(by_key[row.did, row.rkey]))
        if exact is not None and after is None:
            body["hitsTotal"] = exact
        return orjson.dumps(body)

    return await api.cache.get((m.nsid, terms, p["limit"], p.get("cursor")), compute)


def table() -> dict[str, tuple[Method, Handler]]:
    handlers: dict[str, Handler] = {
        FEED: feed_get_tracks,
        ACTOR: actor_get_tracks,
        TRACK: track_get_track,
        SEARCH: feed_search_tracks,
    }
    return {nsid: (method(nsid), handler) for nsid, handler in handlers.items()}


# -- helpers ---------------------------------------------------------------------------------------------

Page = tuple[list[TrackRow], dict[str, str | None]]


def _with_handles(query: Callable[..., list[TrackRow]]) -> Callable[..., Page]:
    def run(con: queries.Con, *args: Any) -> Page:
        rows = query(con, *args)
        return rows, queries.handles(con, [row.did for row in rows])

    return run


def _actor_page(con: queries.Con, actor: str, limit: int, after: queries.FeedKey | None) -> Page | None:
    """One account's page, in one trip to the pool; None if no indexed account has that DID or handle."""
    found = queries.account(con, actor)
    if found is None:
        return None
    did, handle = found
    return queries.actor_page(con, did, limit, after), {did: handle}


def _one_track(con: queries.Con, repo: str, rkey: str) -> Page | None:
    found = queries.account(con, repo)
    if found is None:
        return None
    did, handle = found
    row = queries.track(con, did, rkey)
    return ([row] if row else []), {did: handle}


def _feed_key(row: TrackRow) -> tuple[int, str, str]:
    return (row.sort_us, row.did, row.rkey)


def _decode(api: Api, scope: str, cursor: str | None, shape: tuple[type, ...]) -> Any:
    return None if cursor is None else api.codec.decode(scope, cursor, shape)


def _page(api: Api, scope: str, page: Page, limit: int, key: Callable[[TrackRow], tuple]) -> bytes:
    return orjson.dumps(_page_dict(api, scope, page, limit, key))


def _page_dict(api: Api, scope: str, page: Page, limit: int, key: Callable[[TrackRow], tuple]) -> dict[str, Any]:
    """A page from limit + 1 rows: the extra row only tells that there is a next page."""
    rows, names = page
    body: dict[str, Any] = {"tracks": [track_view(row, names.get(row.did)) for row in rows[:limit]]}
    if len(rows) > limit:
        body["cursor"] = api.codec.encode(scope, key(rows[limit - 1]))
    return body


def _split_uri(uri: str) -> tuple[str, str]:
    parts = uri.removeprefix("at://").split("/")
    if len(parts) != 3 or parts[1] != TRACK_COLLECTION or not parts[2]:
        raise invalid(f"uri must name an {TRACK_COLLECTION} record: at://<did or handle>/{TRACK_COLLECTION}/<rkey>")
    return parts[0], parts[2]
