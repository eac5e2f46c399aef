"""Small builders the tests share: settings from variables, and wire events through the real planner."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from indexer.config import Settings
from indexer.db.duckdb_store import DuckDBStore
from indexer.db.store import Store
from indexer.ingest.events import Event, parse
from indexer.ingest.planner import Planner

# These machines reach only loopback, and the default relay is public: discovery is off unless a test names a
# loopback relay, and repository syncs are off unless a test turns them on (RELAY_BACKFILL=true).
NO_BACKFILL = {"RELAY_BACKFILL_URLS": "", "RELAY_BACKFILL": "false"}


def make_settings(env: Mapping[str, object] | None = None, **variables: object) -> Settings:
    """Settings as an operator would set them, by variable name (`RELAY_PORT=...`); no `.env` is read."""
    values = {**NO_BACKFILL, **(env or {}), **variables}
    return Settings.from_env({name: _text(value) for name, value in values.items()}, env_file="/nonexistent")


def _text(value: object) -> str:
    if isinstance(value, tuple | list | frozenset | set):
        return ",".join(str(part) for part in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def wire(*events: dict[str, Any]) -> list[Event]:
    """Wire events (dicts as Jetstream sends them) parsed as the consumer parses frames."""
    return [parse(orjson.dumps(event)) for event in events]


def open_store(path: Path) -> DuckDBStore:
    return DuckDBStore(path)


class Applier:
    """Applies wire events to a store through the real planner, as the writer would. Records are taken as
    they come (`unverified`, as with RELAY_VERIFY_RECORDS off): the proof tests prove theirs for real."""

    def __init__(self, store: Store, *, verify: bool = False) -> None:
        self.store = store
        self.planner = Planner(store.known_accounts(), verify=verify)

    def apply(self, *events: dict[str, Any], source: str | None = "test") -> list[str]:
        return self.store.apply(self.planner.plan(wire(*events)), source)
