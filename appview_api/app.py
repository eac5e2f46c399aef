"""The Starlette application: XRPC methods, health, the did:web document and Prometheus metrics.

Every failure inside a request becomes a JSON XRPC error here, and only here: a typed XrpcError as is, a
database that is gone as 503, anything else as a logged 500 that shows the client no internals.
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

import duckdb
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from appview_api.audio.routes import audio_route
from appview_api.middleware import MetricsMiddleware
from appview_api.publish.local_index import PublishSink
from appview_api.publish.routes import Publishing
from appview_api.read import methods
from appview_api.read.pagination import CursorCodec, cursor_secret
from appview_api.xrpc import XrpcError, json_response
from indexer import __version__
from indexer.config import Settings
from indexer.db.store import Store

log = logging.getLogger(__name__)

READ_THREADS = 4

IndexerStatus = Callable[[], Mapping[str, Any]]


def create_app(
    settings: Settings,
    store: Store,
    *,
    indexer_status: IndexerStatus | None = None,
    publish_sink: PublishSink | None = None,
) -> Starlette:
    """Build the app; reads the cursor secret (and stores a new one if none exists yet).

    `publish_sink` indexes what this app publishes (the indexer's, when one runs in the process); without
    one, publishing writes to the store through a writer of its own."""
    codec = CursorCodec(cursor_secret(settings.cursor_secret, store))
    pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="api-read")
    api = methods.Api(store, codec, pool)
    api.sync.load()
    table = methods.table()
    publishing = Publishing(settings, store, publish_sink)

    async def xrpc(request: Request) -> Response:
        nsid = request.path_params["nsid"]
        entry = table.get(nsid)
        if entry is None:
            return XrpcError("MethodNotImplemented", f"no method {nsid[:100]!r} here", 501).response()
        method, handler = entry
        try:
            params = method.parse(request.query_params.multi_items())
            body = await handler(api, method, params)
        except XrpcError as exc:
            return exc.response()
        except duckdb.Error as exc:
            return _database_error(nsid, exc)
        except Exception:
            log.exception("request failed nsid=%s", nsid)
            return XrpcError("InternalServerError", "internal error", 500).response()
        return Response(body, media_type="application/json")

    async def health(request: Request) -> Response:
        body: dict[str, Any] = {"version": __version__}
        try:
            cursor = await api.db(lambda con: store.cursor())
        except duckdb.Error as exc:
            body.update(error="DatabaseUnavailable", message=str(exc).splitlines()[0][:200])
            return json_response(body, 503)
        body["cursor"] = None if cursor is None else cursor.time_us
        body["lagSeconds"] = None if cursor is None else max(time.time() - cursor.time_us / 1e6, 0.0)
        if indexer_status is not None:
            body["indexer"] = dict(indexer_status())
        return json_response(body)

    async def did_document(request: Request) -> Response:
        return json_response(
            {
                "@context": ["https://www.w3.org/ns/did/v1"],
                "id": settings.did,
                "service": [{"id": "#relay_appview", "type": "RelayAppView", "serviceEndpoint": settings.base_url}],
            }
        )

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        following = asyncio.create_task(api.sync.follow(), name="catalog-sync")
        try:
            yield
        finally:
            following.cancel()
            await publishing.aclose()
            pool.shutdown(wait=True, cancel_futures=True)
            gc.unfreeze()  # the catalog was frozen at load (see sync.py); let shutdown collect it

    return Starlette(
        routes=[
            *publishing.routes(),
            audio_route(publishing.storage),
            Route("/xrpc/_health", health),
            Route("/xrpc/{nsid}", xrpc),
            Route("/.well-known/did.json", did_document),
            Route("/metrics", metrics),
        ],
        middleware=[
            Middleware(MetricsMiddleware, nsids=[*table, *Publishing.NSIDS]),
            Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "HEAD", "POST"], allow_headers=["*"]),
        ],
        lifespan=lifespan,
    )


def _database_error(nsid: str, exc: duckdb.Error) -> Response:
    if isinstance(exc, duckdb.ConnectionException | duckdb.IOException):
        log.warning("database unavailable nsid=%s error=%s", nsid, str(exc).splitlines()[0])
        return XrpcError("DatabaseUnavailable", "the index is unavailable", 503).response()
    log.exception("query failed nsid=%s", nsid)
    return XrpcError("InternalServerError", "internal error", 500).response()
