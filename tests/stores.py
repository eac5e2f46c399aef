"""The store under test on either backend, and plain SQL on what it holds (for assertions only).

SQL is written once, with DuckDB's `?` placeholders; on PostgreSQL they become `%s`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from indexer.db.duckdb_store import DuckDBStore
from indexer.db.pg_store import PgStore
from indexer.db.store import Store

BACKENDS = ("duckdb", "postgresql")

Opener = Callable[..., Store]


def query(store: Store, sql: str, *params: Any) -> list[tuple]:
    if isinstance(store, DuckDBStore):
        return store.reader().execute(sql, list(params)).fetchall()
    assert isinstance(store, PgStore)
    with psycopg.connect(store.url, autocommit=True) as con:
        return con.execute(sql.replace("?", "%s"), params or None).fetchall()  # type: ignore[arg-type]


def execute(store: Store, sql: str, *params: Any) -> None:
    if isinstance(store, DuckDBStore):
        store.reader().execute(sql, list(params))
        return
    assert isinstance(store, PgStore)
    with psycopg.connect(store.url, autocommit=True) as con:
        con.execute(sql.replace("?", "%s"), params or None)  # type: ignore[arg-type]


def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the backend `request.param` names, on the same database each time; closes every store after."""
    opened: list[Store] = []
    if request.param == "duckdb":
        path = tmp_path / "relay.duckdb"

        def make(**options: Any) -> Store:
            opened.append(DuckDBStore(path, **options))
            return opened[-1]
    else:
        url = request.getfixturevalue("pg_url")

        def make(**options: Any) -> Store:
            opened.append(PgStore(url, **options))
            return opened[-1]

    yield make
    for store in opened:
        store.close()
