"""The two backends hold the same tables and columns: a table or column added to one and not the other
(a migration on one side only, after a merge, say) fails here, naming it."""

from pathlib import Path

from indexer.db.duckdb_store import DuckDBStore
from indexer.db.pg_store import PgStore
from tests.stores import query

COLUMNS = (
    "SELECT table_name, column_name FROM information_schema.columns "
    "WHERE table_schema = current_schema() ORDER BY table_name, column_name"
)
POSTGRESQL_ONLY = {"clock"}  # the stamp clock (pg_store.py)


def test_duckdb_and_postgresql_have_the_same_tables_and_columns(tmp_path: Path, pg_url: str) -> None:
    duck = DuckDBStore(tmp_path / "relay.duckdb")
    pg = PgStore(pg_url)
    try:
        ours = {(table, column) for table, column in query(duck, COLUMNS)}
        theirs = {(table, column) for table, column in query(pg, COLUMNS) if table not in POSTGRESQL_ONLY}
    finally:
        duck.close()
        pg.close()
    assert sorted(ours - theirs) == [], "in DuckDB only: add them to indexer/db/pg_schema.py"
    assert sorted(theirs - ours) == [], "in PostgreSQL only: add them to indexer/db/schema.py"
