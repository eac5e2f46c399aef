"""The API's SQL: what the catalog reads of the index to load itself and catch up, on a caller's cursor.

Every write the API must reflect stamps the rows it touches (`tracks.changed_us`; `first_seen_us` and
`handle_resolved_us` on accounts) with a time that rises from commit to commit, so "what changed since I
last looked" is a plain `>` on that stamp. The first load reads only visible tracks; catching up reads
every changed row, since a row that stopped being visible must leave the catalog.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

import duckdb

from appview_api.read.catalog import AccountRow, TrackRow

Con = duckdb.DuckDBPyConnection

VISIBLE = "audio_state = 'verified' AND NOT deleted AND NOT hidden"
_TRACK_COLUMNS = (
    f"did, rkey, {VISIBLE}, cid, title, artist, album, audio_url, file_type, duration, created_at, indexed_us, "
    "sort_us, coalesce(changed_us, 0)"
)
_ACCOUNT_STAMP = "greatest(first_seen_us, coalesce(handle_resolved_us, 0))"


def track_rows(con: Con, since: int | None, batch: int = 20_000) -> Iterator[list[TrackRow]]:
    """Visible tracks (since None), or every track row stamped after `since`, in batches."""
    if since is None:
        result = con.execute(f"SELECT {_TRACK_COLUMNS} FROM tracks WHERE {VISIBLE}")
    else:
        result = con.execute(f"SELECT {_TRACK_COLUMNS} FROM tracks WHERE changed_us > ?", [since])
    while chunk := result.fetchmany(batch):
        yield [TrackRow(*row) for row in chunk]


def account_rows(con: Con, since: int | None) -> list[AccountRow]:
    columns = f"did, handle, coalesce(handle_resolved_us, 0), {_ACCOUNT_STAMP}"
    if since is None:
        rows = con.execute(f"SELECT {columns} FROM accounts").fetchall()
    else:
        rows = con.execute(f"SELECT {columns} FROM accounts WHERE {_ACCOUNT_STAMP} > ?", [since]).fetchall()
    return [AccountRow(*row) for row in rows]


def stamps(con: Con) -> tuple[int, int]:
    """The latest stamps on tracks and on accounts: where catching up starts after a full load."""
    row = con.execute(
        f"SELECT (SELECT coalesce(max(changed_us), 0) FROM tracks), "
        f"(SELECT coalesce(max({_ACCOUNT_STAMP}), 0) FROM accounts)"
    ).fetchone()
    assert row is not None
    return row[0], row[1]


@contextmanager
def snapshot(con: Con) -> Iterator[Con]:
    """Reads in one transaction, so they all see the same commits."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        with suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
