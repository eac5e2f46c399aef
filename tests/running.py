"""An Indexer running in the test's event loop over a store the test owns, stopped and drained on exit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from indexer.config import Settings
from indexer.db.store import Store
from indexer.ingest.service import Indexer
from indexer.net.audio_check import AudioChecker


@contextlib.asynccontextmanager
async def running_indexer(settings: Settings, store: Store, cursor: int | None) -> AsyncIterator[Indexer]:
    checker = AudioChecker(settings, retry_base_seconds=0.01)
    indexer = Indexer(settings, store, replay_from=cursor, checker=checker)
    task = asyncio.create_task(indexer.run())
    try:
        yield indexer
    finally:
        indexer.stop()
        async with asyncio.timeout(20):
            await task
        await checker.aclose()
