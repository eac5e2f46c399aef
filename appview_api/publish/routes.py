"""POST /xrpc/app.relay.track.{publish,update,delete}: requests in, `Publisher` calls, XRPC errors out.

Each request is authenticated and rate-limited from its headers alone, before its body is read: a
stranger's 100 MB upload costs a getSession round trip, not 100 MB of disk.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from appview_api.audio.storage import LocalStorage, R2Storage, make_storage
from appview_api.errors import QuotaExceeded, RateLimited, RequestError
from appview_api.publish.pds import Pds, Session
from appview_api.publish.publisher import Publisher, check_client_rkey
from appview_api.publish.ratelimit import ByteBudget, RateLimiter
from appview_api.publish.upload import TEXT_FIELDS, Form, Limits, spool_form, too_large
from appview_api.xrpc import json_input, json_response, method
from indexer.config import Settings
from indexer.ingest.index import Index
from indexer.net.outbound import Outbound

log = logging.getLogger(__name__)

PUBLISH = "app.relay.track.publish"
UPDATE = "app.relay.track.update"
DELETE = "app.relay.track.delete"

Handler = Callable[[Request, Session], Awaitable[dict[str, Any]]]


class Publishing:
    """The publish endpoints and what they hold open (HTTP clients)."""

    NSIDS = (PUBLISH, UPDATE, DELETE)

    def __init__(self, settings: Settings, index: Index, outbound: Outbound) -> None:
        self.storage: LocalStorage | R2Storage = make_storage(settings.storage, settings.api.base_url)
        self._pds = Pds(settings.identity, outbound)
        self._index = index
        self.publisher = Publisher(self.storage, self._pds, index)
        self._limiter = RateLimiter(settings.publish.rate_per_minute)
        self._budget = ByteBudget(settings.publish.upload_budget_bytes_per_hour)
        self._quota = settings.publish.account_quota_bytes
        self._read_timeout = settings.publish.read_timeout_seconds
        self.max_upload_bytes = settings.publish.max_upload_bytes
        self._publish_params = method(PUBLISH)

    def routes(self) -> list[Route]:
        return [
            Route(f"/xrpc/{PUBLISH}", self._endpoint(self._publish), methods=["POST"]),
            Route(f"/xrpc/{UPDATE}", self._endpoint(self._update), methods=["POST"]),
            Route(f"/xrpc/{DELETE}", self._endpoint(self._delete), methods=["POST"]),
        ]

    async def aclose(self) -> None:
        await self._pds.aclose()

    def limit(self, did: str) -> None:
        """Take one of the account's writes for this minute (the web pages' writes count too)."""
        retry_after = self._limiter.acquire(did)
        if retry_after is not None:
            raise RateLimited(retry_after)

    @contextlib.asynccontextmanager
    async def receive(
        self, request: Request, did: str, text_fields: frozenset[str] = TEXT_FIELDS
    ) -> AsyncIterator[Form]:
        """The upload's form, spooled to disk within the account's quota, the service's upload budget and
        the read timeout; all three are refused before a byte is read when they already must be."""
        used = await anyio.to_thread.run_sync(self._index.account_bytes, did)
        room = self._quota - used if self._quota > 0 else self.max_upload_bytes
        if room <= 0:
            raise self._over_quota(used)(0)
        self._charge(1)  # a budget already spent refuses now, not after the first chunk
        limits = Limits(
            min(self.max_upload_bytes, room),
            self._read_timeout,
            self._charge,
            too_large if room >= self.max_upload_bytes else self._over_quota(used),
        )
        headers = request.headers
        async with spool_form(
            request.stream(), headers.get("content-type"), headers.get("content-length"), limits, text_fields
        ) as form:
            yield form

    def _charge(self, size: int) -> None:
        retry_after = self._budget.take(size)
        if retry_after is not None:
            raise RateLimited(retry_after, "uploads: the service's upload budget for the hour is spent")

    def _over_quota(self, used: int) -> Callable[[int], RequestError]:
        def refuse(room: int) -> RequestError:
            return QuotaExceeded(
                f"the account's audio would exceed its quota of {self._quota} bytes ({used} bytes used)"
            )

        return refuse

    def _endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = await self._pds.authenticate(request.headers.get("authorization"))
            self.limit(session.did)
            return json_response(await handler(request, session))

        return endpoint

    async def _publish(self, request: Request, session: Session) -> dict[str, Any]:
        params = self._publish_params.parse(request.query_params.multi_items())
        rkey = check_client_rkey(params["rkey"]) if "rkey" in params else None  # before the body is read
        async with self.receive(request, session.did) as form:
            return await self.publisher.publish(session, form, rkey=rkey, dry_run=params["dryRun"])

    async def _update(self, request: Request, session: Session) -> dict[str, Any]:
        return await self.publisher.update(session, await json_input(request, UPDATE))

    async def _delete(self, request: Request, session: Session) -> dict[str, Any]:
        return await self.publisher.delete(session, (await json_input(request, DELETE))["uri"])
