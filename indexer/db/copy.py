"""`relay-appview db copy`: a DuckDB index into an empty PostgreSQL database, every table and column.

Tables are copied by name: each of the target's tables (but its own `clock` and `schema_migrations`) is
read from the DuckDB file with the target's columns, in batches, and COPYed in; a table or column missing
from the file is an error that names it. Everything goes in one transaction, so a copy that fails leaves
the target empty and can simply be run again. The clock then starts after the newest stamp copied, and an
indexer on the copy resumes from the copied cursor.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa

from indexer.db.duckdb_store import DuckDBStore
from indexer.db.pg_connect import Connection, connect, redacted, translated
from indexer.db.pg_store import PgStore, copy_rows
from indexer.errors import StoreError

Progress = Callable[[str, int, int], None]  # table, rows copied, rows in all

BATCH_ROWS = 100_000
_OWN_TABLES = ("clock", "schema_migrations")
_TABLES = (
    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
    "AND table_type = 'BASE TABLE' ORDER BY table_name"
)
_COLUMNS = (
    "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
    "AND table_name = %s ORDER BY ordinal_position"
)
_CLOCK = (
    "UPDATE clock SET stamp = greatest(stamp, (SELECT coalesce(max(changed_us), 0) FROM tracks), "
    "(SELECT coalesce(max(greatest(first_seen_us, coalesce(handle_resolved_us, 0))), 0) FROM accounts), "
    "(SELECT coalesce(max(checked_us), 0) FROM audio_checks))"
)


def copy_index(source: Path, target: str, progress: Progress) -> dict[str, int]:
    """Copy the index at `source` into the database at `target` (migrated first; it must hold no rows)."""
    duck = DuckDBStore(source, read_only=True)
    try:
        PgStore(target).close()  # the schema, migrated
        con = connect(target)
        try:
            with translated():
                return _copy(duck, con, target, progress)
        finally:
            con.close()
    finally:
        duck.close()


def _copy(duck: DuckDBStore, con: Connection, target: str, progress: Progress) -> dict[str, int]:
    tables = [name for (name,) in con.execute(_TABLES).fetchall() if name not in _OWN_TABLES]
    for table in tables:
        if con.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
            raise StoreError(f"{redacted(target)} is not empty ({table} has rows): copy into an empty database")
    copied: dict[str, int] = {}
    with con.transaction():
        for table in tables:
            columns = [name for (name,) in con.execute(_COLUMNS, (table,)).fetchall()]
            copied[table] = _copy_table(duck, con, table, columns, progress)
        con.execute(_CLOCK)
    con.execute("ANALYZE")
    return copied


def _copy_table(duck: DuckDBStore, con: Connection, table: str, columns: list[str], progress: Progress) -> int:
    reader = duck.reader()
    try:
        total = reader.execute(f"SELECT count(*) FROM {table}").fetchone()
        blobs = {name for name, kind in reader.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?", [table]
        ).fetchall() if kind == "BLOB"}
        # bytea in PostgreSQL's hex input form: CSV carries text only.
        select = ", ".join(f"'\\x' || hex({name}) AS {name}" if name in blobs else name for name in columns)
        batches = reader.sql(f"SELECT {select} FROM {table}").to_arrow_reader(BATCH_ROWS)
    except duckdb.Error as exc:
        raise StoreError(f"cannot read {table} from the DuckDB file: {exc}") from exc
    assert batches is not None  # a query's result always has a reader
    done = 0
    for batch in batches:
        copy_rows(con, table, pa.Table.from_batches([batch]))
        done += batch.num_rows
        progress(table, done, total[0] if total else done)
    if done == 0:
        progress(table, 0, 0)
    return done
