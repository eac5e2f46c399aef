"""The operator's API (`app.relay.admin.*`): steer the running service without stopping it.

DuckDB lets one process hold the database, so while `serve` runs, `relay-appview replay`, `backfill` and
`status` ask it here instead of opening the file. Every call carries `Authorization: Bearer
<RELAY_ADMIN_TOKEN>`; while the token is unset the methods answer 404 (the API is off), and a missing or
wrong token answers 401. The lexicons under `lexicons/app/relay/admin/` declare the inputs and outputs, and
both are validated here against them.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from typing import Any, Protocol

from lexrpc.base import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from appview_api.errors import AuthRequired, IndexerNotRunning, InvalidRequest, NotFound
from appview_api.xrpc import json_input, json_response, method
from indexer.atproto import lexicons
from indexer.atproto.datetimes import iso_from_us
from indexer.config import Settings
from indexer.db.store import now_us
from indexer.ingest.index import Index

log = logging.getLogger(__name__)

REPLAY, BACKFILL, STATUS = "app.relay.admin.replay", "app.relay.admin.backfill", "app.relay.admin.getStatus"
NSIDS = (REPLAY, BACKFILL, STATUS)


class Control(Protocol):
    """What the admin API steers: the running indexer (`indexer.ingest.service.Indexer`)."""

    async def replay(self, time_us: int) -> None: ...

    async def request_backfill(self, dids: list[str] | None) -> int: ...

    def status(self) -> Mapping[str, object]: ...


Handler = Callable[[Request], Awaitable[dict[str, Any]]]


class Admin:
    def __init__(self, settings: Settings, index: Index, control: Control | None, pool: Executor) -> None:
        self._token = settings.admin.token.encode()
        self._index = index
        self._control = control
        self._pool = pool
        self._status_params = method(STATUS)

    def routes(self) -> list[Route]:
        return [
            Route(f"/xrpc/{REPLAY}", self._endpoint(REPLAY, self._replay), methods=["POST"]),
            Route(f"/xrpc/{BACKFILL}", self._endpoint(BACKFILL, self._backfill), methods=["POST"]),
            Route(f"/xrpc/{STATUS}", self._endpoint(STATUS, self._status), methods=["GET"]),
        ]

    def _endpoint(self, nsid: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            self._authorize(request.headers.get("authorization"))
            body = await handler(request)
            try:
                lexicons.validator().validate(nsid, "output", body)
            except ValidationError as exc:  # our own bug: say so in the log, not to the client
                log.error("admin output does not match its lexicon nsid=%s reason=%s", nsid, exc)
                raise
            return json_response(body)

        return endpoint

    def _authorize(self, header: str | None) -> None:
        if not self._token:
            raise NotFound("the admin API is off: set RELAY_ADMIN_TOKEN to turn it on")
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthRequired("the admin API needs 'Authorization: Bearer <RELAY_ADMIN_TOKEN>'")
        if not hmac.compare_digest(token.strip().encode(), self._token):
            raise AuthRequired("the admin token is wrong")

    def _running(self) -> Control:
        if self._control is None:
            raise IndexerNotRunning("this process serves the API only (serve --no-index): nothing here indexes")
        return self._control

    async def _replay(self, request: Request) -> dict[str, Any]:
        cursor = (await json_input(request, REPLAY))["cursor"]
        await self._running().replay(cursor)
        log.warning("replay asked for through the admin API cursor=%d", cursor)
        return {"cursor": cursor, "time": iso_from_us(cursor)}

    async def _backfill(self, request: Request) -> dict[str, Any]:
        body = await json_input(request, BACKFILL)
        dids, everyone = body.get("dids") or [], bool(body.get("all"))
        if bool(dids) == everyone:
            raise InvalidRequest("give either dids or all: true")
        since = now_us()
        requested = await self._running().request_backfill(None if everyone else list(dids))
        asked = "all" if everyone else len(dids)
        log.warning("backfill asked for through the admin API accounts=%s requested=%d", asked, requested)
        return {"requested": requested, "since": since}

    async def _status(self, request: Request) -> dict[str, Any]:
        params = self._status_params.parse(request.query_params.multi_items())
        loop = asyncio.get_running_loop()
        report = await loop.run_in_executor(self._pool, self._index.status, params["rejections"])
        progress = await loop.run_in_executor(self._pool, self._index.sync_progress, params.get("since", 0))
        body: dict[str, Any] = {"status": report, "progress": progress.counts()}
        if self._control is not None:
            body["indexer"] = dict(self._control.status())
        return body
