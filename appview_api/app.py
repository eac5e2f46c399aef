"""The Starlette application: the web pages, XRPC methods, publishing, sign-in, audio, health, the did:web
document and metrics.

Every failure inside a request is rendered by the handlers in `xrpc.EXCEPTION_HANDLERS`, and only there
(pages wrap them to answer in HTML): a domain error as its XRPC error, anything else as a 500 that shows
the client no internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from appview_api.admin import NSIDS as ADMIN_NSIDS
from appview_api.admin import Admin, Control
from appview_api.audio.routes import audio_route
from appview_api.errors import MethodNotImplemented
from appview_api.middleware import MetricsMiddleware
from appview_api.oauth.service import OAuth
from appview_api.pages.site import Site
from appview_api.publish.routes import Publishing
from appview_api.read import methods
from appview_api.read.pagination import CursorCodec
from appview_api.xrpc import EXCEPTION_HANDLERS, json_response
from indexer import __version__
from indexer import metrics as relay_metrics
from indexer.config import Settings
from indexer.errors import StoreError
from indexer.ingest.index import Index
from indexer.net.outbound import Outbound

log = logging.getLogger(__name__)

READ_THREADS = 4

IndexerStatus = Callable[[], Mapping[str, Any]]


def create_app(
    settings: Settings, index: Index, *, indexer_status: IndexerStatus | None = None, control: Control | None = None
) -> Starlette:
    """Build the app over `index` (reads the cursor secret, storing a new one if none exists yet). `control`:
    the running indexer, for the admin API."""
    codec = CursorCodec(index.cursor_secret(settings.api.cursor_secret))
    pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="api-read")
    api = methods.Api(index, codec, pool)
    api.sync.load()
    table = methods.table()
    outbound = Outbound(settings)  # one DNS resolver and SSRF guard for every fetch the API makes
    publishing = Publishing(settings, index, outbound)
    oauth = OAuth(settings, index, outbound)
    site = Site(settings, api, publishing, oauth)
    admin = Admin(settings, index, control, pool)

    async def xrpc(request: Request) -> Response:
        nsid = request.path_params["nsid"]
        entry = table.get(nsid)
        if entry is None:
            raise MethodNotImplemented(f"no method {nsid[:100]!r} here")
        method, handler = entry
        body = await handler(api, method, method.parse(request.query_params.multi_items()))
        return Response(body, media_type="application/json")

    async def health(request: Request) -> Response:
        body: dict[str, Any] = {"version": __version__}
        try:
            cursor = await asyncio.get_running_loop().run_in_executor(pool, index.cursor)
        except StoreError as exc:
            body.update(error="DatabaseUnavailable", message=exc.reason[:200])
            return json_response(body, 503)
        body["cursor"] = None if cursor is None else cursor.time_us
        body["lagSeconds"] = None if cursor is None else max(time.time() - cursor.time_us / 1e6, 0.0)
        if indexer_status is not None:
            body["indexer"] = dict(indexer_status())
            with contextlib.suppress(StoreError):  # the cursor answered: this read is no different
                progress = await asyncio.get_running_loop().run_in_executor(pool, index.sync_progress)
                body["backfill"] = progress.counts()
        failing = index.writes_failing()
        if failing is not None and failing[0] > settings.api.write_grace_seconds:
            seconds, reason = failing
            body.update(error="WritesFailing", message=f"every write for {seconds:.0f} s has failed: {reason}"[:300])
            return json_response(body, 503)
        return json_response(body)

    async def did_document(request: Request) -> Response:
        return json_response(
            {
                "@context": ["https://www.w3.org/ns/did/v1"],
                "id": settings.api.did,
                "service": [
                    {"id": "#relay_appview", "type": "RelayAppView", "serviceEndpoint": settings.api.base_url}
                ],
            }
        )

    async def metrics(request: Request) -> Response:
        if indexer_status is not None:
            with contextlib.suppress(StoreError):  # the counters still answer
                progress = await asyncio.get_running_loop().run_in_executor(pool, index.sync_progress)
                for state, n in progress.counts().items():
                    if state not in ("total", "done", "records"):
                        relay_metrics.SYNC_STATES.labels(state=state).set(n)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        following = asyncio.create_task(api.sync.follow(), name="catalog-sync")
        try:
            yield
        finally:
            following.cancel()
            await publishing.aclose()
            await oauth.aclose()
            await outbound.aclose()
            site.close()
            pool.shutdown(wait=True, cancel_futures=True)
            gc.unfreeze()  # the catalog was frozen at load (see sync.py); let shutdown collect it

    app = Starlette(
        routes=[
            *site.routes(),
            *oauth.routes(),
            *publishing.routes(),
            *admin.routes(),
            audio_route(publishing.storage),
            Route("/xrpc/_health", health),
            Route("/xrpc/{nsid}", xrpc),
            Route("/.well-known/did.json", did_document),
            Route("/metrics", metrics),
        ],
        middleware=[
            Middleware(MetricsMiddleware, nsids=[*table, *Publishing.NSIDS, *ADMIN_NSIDS]),
            Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "HEAD", "POST"], allow_headers=["*"]),
        ],
        exception_handlers=site.exception_handlers(EXCEPTION_HANDLERS),
        lifespan=lifespan,
    )
    # Starlette answers a path with a stray trailing slash by redirecting to the URL rebuilt from the
    # request's Host header, which anyone sets: a redirect to their site in our name. No such redirects.
    app.router.redirect_slashes = False
    return app
