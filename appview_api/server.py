"""`serve`: uvicorn and, optionally, the indexer in one process, sharing one DuckDB database.

Shutdown order matters: on SIGTERM or SIGINT uvicorn first stops accepting and drains the requests in
flight, then the indexer is stopped and awaited so it flushes its last batch and cursor. uvicorn's own
signal capture is switched off because it re-raises the signal once it has served, which would kill the
process before the indexer has flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from typing import Protocol

import uvicorn

from appview_api.admin import Control
from appview_api.app import create_app
from indexer.config import Settings
from indexer.ingest.index import Index

log = logging.getLogger(__name__)


class Indexer(Control, Protocol):
    async def run(self) -> None: ...

    def stop(self) -> None: ...


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # serve() installs its own handlers


async def serve(settings: Settings, index: Index, *, indexer: Indexer | None = None) -> None:
    status = indexer.status if indexer is not None else None
    app = create_app(settings, index, indexer_status=status, control=indexer)
    config = uvicorn.Config(
        app,
        host=settings.api.host,
        port=settings.api.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _request_exit, server)
    indexing = None
    if indexer is not None:
        indexing = asyncio.create_task(indexer.run(), name="indexer")
        indexing.add_done_callback(lambda _: _request_exit(server))  # an indexer that dies takes serve down
    try:
        await server.serve()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if indexing is not None:
            assert indexer is not None
            indexer.stop()
            await indexing
    log.info("serve stopped")


def _request_exit(server: uvicorn.Server) -> None:
    if server.should_exit:
        server.force_exit = True  # a second signal: stop waiting for slow requests
    server.should_exit = True
