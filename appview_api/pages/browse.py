"""The reading pages: discovery (`/`, with search and paging), a profile, a track.

They read through the XRPC methods themselves (`read/methods.py`: the same catalog, cursors, validation
and response cache), so a page can never show what the API would not. The list of tracks is rendered
once per catalog version and query, then reused for every viewer: it holds nothing of who is looking.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from appview_api.audio.format import CONTENT_TYPES
from appview_api.errors import ActorNotFound, NotFound
from appview_api.pages.render import shown
from appview_api.pages.web import Web
from appview_api.read import methods
from appview_api.read.cache import ResponseCache
from indexer.atproto.syntax import is_did, is_record_key
from indexer.atproto.uri import record_uri

PAGE_SIZE = 25
FRAGMENT_CACHE_BYTES = 16 * 1024 * 1024


class Reads:
    """The XRPC read methods, called in-process, answering parsed JSON."""

    def __init__(self, api: methods.Api) -> None:
        self._api = api
        self._table = methods.table()
        # Lists are bigger than the API's JSON pages and only the first few are hot: a small cache.
        self.fragments = ResponseCache(lambda: api.catalog.version, max_bytes=FRAGMENT_CACHE_BYTES)

    async def call(self, nsid: str, **params: str | int | None) -> dict[str, Any]:
        """The method's answer, parsed; its parameters are checked against its lexicon as for any client."""
        method, handler = self._table[nsid]
        query = [(name, str(value)) for name, value in params.items() if value is not None]
        answer: dict[str, Any] = orjson.loads(await handler(self._api, method, method.parse(query)))
        return answer


class Browse:
    def __init__(self, web: Web, reads: Reads) -> None:
        self._web = web
        self._reads = reads

    def routes(self) -> list[Route]:
        return [
            Route("/", self.feed, methods=["GET", "HEAD"]),
            Route("/profile/{actor}", self.profile, methods=["GET", "HEAD"]),
            Route("/track/{did}/{rkey}", self.track, methods=["GET", "HEAD"]),
        ]

    async def feed(self, request: Request) -> Response:
        await self._web.viewer(request)
        q = request.query_params.get("q", "").strip()
        cursor = request.query_params.get("cursor") or None
        total = None
        if q:
            body = await self._reads.call(methods.SEARCH, q=q, limit=PAGE_SIZE, cursor=cursor)
            total = body.get("hitsTotal")
            empty = "No tracks match that search."
        else:
            body = await self._reads.call(methods.FEED, limit=PAGE_SIZE, cursor=cursor)
            empty = "No tracks yet."
        html = self._tracks(("feed", q, cursor), body, _more("/", body, q=q or None), empty)
        return self._web.render.page(request, "feed.html", {"q": q, "total": total, "tracks_html": html})

    async def profile(self, request: Request) -> Response:
        await self._web.viewer(request)
        actor = request.path_params["actor"]
        cursor = request.query_params.get("cursor") or None
        try:
            body = await self._reads.call(methods.ACTOR, actor=actor, limit=PAGE_SIZE, cursor=cursor)
        except ActorNotFound as exc:
            raise NotFound(exc.reason) from None
        more = _more(request.url.path, body)
        html = self._tracks(("actor", actor.lower(), cursor), body, more, "No tracks yet.")
        account = _account(body, actor)
        return self._web.render.page(request, "profile.html", account | {"tracks_html": html})

    async def track(self, request: Request) -> Response:
        viewer = await self._web.viewer(request)
        did, rkey = request.path_params["did"], request.path_params["rkey"]
        if not is_did(did) or not is_record_key(rkey):
            raise NotFound("there is no track at this address")
        body = await self._reads.call(methods.TRACK, uri=record_uri(did, rkey))
        track = shown(body["track"])
        context = {
            "track": track,
            "owner": viewer is not None and viewer.did == did,
            "audio_type": CONTENT_TYPES.get(track["fileType"], "audio/mpeg"),
        }
        return self._web.render.page(request, "track.html", context)

    def _tracks(self, key: tuple[str | None, ...], body: dict[str, Any], more: str | None, empty: str) -> Markup:
        """The list, rendered once per catalog version: `key` names the query, as the API's cache does."""

        def render() -> bytes:
            tracks = [shown(view) for view in body["tracks"]]
            return self._web.render.fragment("tracks.html", tracks=tracks, more=more, empty=empty).encode()

        return Markup(self._reads.fragments.get(key, render).decode())


def _account(body: dict[str, Any], actor: str) -> dict[str, str]:
    """The name and DID a profile shows: from its tracks' author when it has any, else as asked."""
    if body["tracks"]:
        author = body["tracks"][0]["author"]
        name = f"@{author['handle']}" if author.get("handle") else author["did"]
        return {"name": name, "did": author["did"]}
    return {"name": actor if actor.startswith("did:") else f"@{actor}", "did": actor}


def _more(path: str, body: dict[str, Any], **params: str | None) -> str | None:
    cursor = body.get("cursor")
    if not isinstance(cursor, str):
        return None
    query = {name: value for name, value in params.items() if value} | {"cursor": cursor}
    return f"{path}?{urlencode(query)}"
