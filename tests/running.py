"""An Indexer running in the test's event loop over a store the test owns, stopped and drained on exit;
and the settings the in-process indexer tests share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from indexer.config import Settings
from indexer.db.duckdb_store import DuckDBStore
from indexer.db.store import Store
from indexer.ingest.index import Index
from indexer.ingest.service import Indexer
from indexer.net.audio_check import AudioChecker
from tests.builders import make_settings


def indexer_settings(jetstream_url: str, **variables: Any) -> Settings:
    """Quick batches and backoffs, loopback audio allowed, and a PLC URL nothing listens on."""
    defaults = {
        "RELAY_JETSTREAM_URLS": jetstream_url,
        "RELAY_PLC_URL": "http://127.0.0.1:9",
        "RELAY_ALLOW_INSECURE": True,
        "RELAY_AUDIO_RETRIES": 2,
        "RELAY_AUDIO_TIMEOUT_SECONDS": 2.0,
        "RELAY_BATCH_SIZE": 50,
        "RELAY_BATCH_SECONDS": 0.05,
        "RELAY_BACKOFF_MIN_SECONDS": 0.01,
        "RELAY_BACKOFF_MAX_SECONDS": 0.05,
        "RELAY_STALL_SECONDS": 2.0,
        "RELAY_VERIFY_RECORDS": False,  # synthetic streams: no PDS holds these records (proof tests turn it on)
    }
    return make_settings(defaults, **variables)


@contextlib.asynccontextmanager
async def running_indexer(settings: Settings, store: Store, cursor: int | None) -> AsyncIterator[Indexer]:
    checker = AudioChecker(settings.audio, settings.net, retry_base_seconds=0.01)
    index = Index(store, max_future_us=settings.ingest.max_future_us, verify=settings.proofs.verify_records)
    indexer = Indexer(settings, index, replay_from=cursor, checker=checker)
    task = asyncio.create_task(indexer.run())
    try:
        yield indexer
    finally:
        indexer.stop()
        async with asyncio.timeout(20):
            await task
        await checker.aclose()
        index.close()


@contextlib.asynccontextmanager
async def indexing_file(settings: Settings, path: Path, cursor: int | None) -> AsyncIterator[Indexer]:
    """running_indexer over a DuckDB file of its own, closed on exit."""
    store = DuckDBStore(path)
    try:
        async with running_indexer(settings, store, cursor) as indexer:
            yield indexer
    finally:
        store.close()
