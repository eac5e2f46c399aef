"""The XRPC methods: a table from NSID to a short handler over the in-memory catalog.

Each handler first waits until the catalog holds every commit made before the request (`Sync.current`),
then answers from memory on the event loop: a page costs tens of microseconds, less than a trip to a
thread pool would. Handlers return the serialized body, so the response cache can keep it as is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from appview_api.errors import ActorNotFound, InvalidRequest, TrackNotFound
from appview_api.read import search
from appview_api.read.cache import ResponseCache
from appview_api.read.catalog import Catalog
from appview_api.read.pagination import CursorCodec
from appview_api.read.sync import Sync
from appview_api.read.views import track_view
from appview_api.xrpc import Method, method
from indexer.atproto.nsid import TRACK_COLLECTION
from indexer.atproto.uri import parse_record_uri
from indexer.ingest.index import Index

FEED = "app.relay.feed.getTracks"
ACTOR = "app.relay.actor.getTracks"
TRACK = "app.relay.track.getTrack"
SEARCH = "app.relay.feed.searchTracks"

_FEED_KEY = (int, str, str)
_SEARCH_KEY = (int, int, str, str)  # a search.Hit


class Api:
    """What every handler needs: the catalog and its sync, the cursor codec and the response cache."""

    def __init__(self, index: Index, codec: CursorCodec, pool: ThreadPoolExecutor) -> None:
        self.codec = codec
        self.catalog = Catalog(codec.secret)
        self.sync = Sync(index, self.catalog, pool)
        self.cache = ResponseCache(lambda: self.catalog.version)

    def views(self, docs: list[int]) -> list[dict[str, Any]]:
        return [track_view(*self.catalog.view(doc)) for doc in docs]


Handler = Callable[[Api, Method, dict[str, Any]], Awaitable[bytes]]


async def feed_get_tracks(api: Api, m: Method, p: dict[str, Any]) -> bytes:
    await api.sync.current()
    limit, cursor = p["limit"], p.get("cursor")

    def compute() -> bytes:
        docs = api.catalog.feed(_decode(api, m.nsid, cursor, _FEED_KEY), limit + 1)
        return orjson.dumps(_page(api, m.nsid, docs, limit, api.catalog.key))

    return api.cache.get((m.nsid, limit, cursor), compute)


async def actor_get_tracks(api: Api, m: Method, p: dict[str, Any]) -> bytes:
    await api.sync.current()
    actor, limit, cursor = p["actor"].lower(), p["limit"], p.get("cursor")
    scope = f"{m.nsid}|{actor}"

    def compute() -> bytes:
        account = api.catalog.account(actor)
        if account is None:
            raise ActorNotFound(f"no indexed account {p['actor']!r}")
        docs = api.catalog.actor_feed(account, _decode(api, scope, cursor, _FEED_KEY), limit + 1)
        return orjson.dumps(_page(api, scope, docs, limit, api.catalog.key))

    return api.cache.get((m.nsid, actor, limit, cursor), compute)


async def track_get_track(api: Api, m: Method, p: dict[str, Any]) -> bytes:
    repo, rkey = _split_uri(p["uri"])
    await api.sync.current()
    account = api.catalog.account(repo)
    doc = None if account is None else account.tracks.get(rkey)
    if doc is None:
        raise TrackNotFound(f"no visible track at {p['uri']}")
    return orjson.dumps({"track": track_view(*api.catalog.view(doc))})


async def feed_search_tracks(api: Api, m: Method, p: dict[str, Any]) -> bytes:
    terms = search.terms(p["q"])
    await api.sync.current()
    limit, cursor = p["limit"], p.get("cursor")
    scope = f"{m.nsid}|{' '.join(terms)}"

    def compute() -> bytes:
        after = _decode(api, scope, cursor, _SEARCH_KEY)
        found, total = api.catalog.search(terms, after, limit + 1)
        hits = {doc: hit for hit, doc in found}
        body = _page(api, scope, list(hits), limit, lambda doc: tuple(hits[doc]))
        if after is None:
            body["hitsTotal"] = total
        return orjson.dumps(body)

    return api.cache.get((m.nsid, terms, limit, cursor), compute)


def table() -> dict[str, tuple[Method, Handler]]:
    handlers: dict[str, Handler] = {
        FEED: feed_get_tracks,
        ACTOR: actor_get_tracks,
        TRACK: track_get_track,
        SEARCH: feed_search_tracks,
    }
    return {nsid: (method(nsid), handler) for nsid, handler in handlers.items()}


# -- helpers ---------------------------------------------------------------------------------------------


def _decode(api: Api, scope: str, cursor: str | None, shape: tuple[type, ...]) -> Any:
    return None if cursor is None else api.codec.decode(scope, cursor, shape)


def _page(api: Api, scope: str, docs: list[int], limit: int, key: Callable[[int], tuple]) -> dict[str, Any]:
    """A page from limit + 1 documents: the extra one only tells that there is a next page."""
    body: dict[str, Any] = {"tracks": api.views(docs[:limit])}
    if len(docs) > limit:
        body["cursor"] = api.codec.encode(scope, key(docs[limit - 1]))
    return body


def _split_uri(uri: str) -> tuple[str, str]:
    parsed = parse_record_uri(uri)
    if parsed is None or parsed.collection != TRACK_COLLECTION:
        raise InvalidRequest(
            f"uri must name an {TRACK_COLLECTION} record: at://<did or handle>/{TRACK_COLLECTION}/<rkey>"
        )
    return parsed.authority, parsed.rkey
