"""The API's SQL: every read it makes of the index, each on a caller-supplied DuckDB cursor.

Feeds order by (sort_us, did, rkey) descending and page by keyset: the leading `sort_us <= $s` conjunct
lets DuckDB skip row groups by their min/max, so a deep page costs about what the first one does. Lookups
by account first pull that account's rows through the `did` index in a MATERIALIZED CTE: with the
visibility filters in the same scan DuckDB would otherwise choose a full table scan (~50 ms at 1M rows
against ~2 ms).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import duckdb

from appview_api.search import IndexRow
from appview_api.views import COLUMNS, TrackRow

Con = duckdb.DuckDBPyConnection
FeedKey = tuple[int, str, str]  # sort_us, did, rkey

VISIBLE = "audio_state = 'verified' AND NOT deleted AND NOT hidden"
_ORDER = "sort_us DESC, did DESC, rkey DESC"
_AFTER = "AND sort_us <= $s AND (sort_us < $s OR did < $d OR (did = $d AND rkey < $r))"


def feed_page(con: Con, limit: int, after: FeedKey | None) -> list[TrackRow]:
    where, params = _after(after)
    sql = f"SELECT {COLUMNS} FROM tracks WHERE {VISIBLE} {where} ORDER BY {_ORDER} LIMIT $n"
    return _rows(con.execute(sql, {**params, "n": limit}).fetchall())


def actor_page(con: Con, did: str, limit: int, after: FeedKey | None) -> list[TrackRow]:
    where, params = _after(after)
    sql = (
        f"WITH mine AS MATERIALIZED (SELECT * FROM tracks WHERE did = $did) "
        f"SELECT {COLUMNS} FROM mine WHERE {VISIBLE} {where} ORDER BY {_ORDER} LIMIT $n"
    )
    return _rows(con.execute(sql, {**params, "did": did, "n": limit}).fetchall())


def track(con: Con, did: str, rkey: str) -> TrackRow | None:
    return visible_tracks(con, [(did, rkey)]).get((did, rkey))


def account(con: Con, actor: str) -> tuple[str, str | None] | None:
    """(DID, handle) of an indexed account named by DID or by handle (handles compare case-insensitively).

    Two accounts can briefly claim one handle (a stale one not yet re-resolved): the latest resolution
    wins. The choice is made here rather than by ORDER BY, which would stop DuckDB using the index.
    """
    if actor.startswith("did:"):
        rows = con.execute("SELECT did, handle, handle_resolved_us FROM accounts WHERE did = ?", [actor])
    else:
        rows = con.execute("SELECT did, handle, handle_resolved_us FROM accounts WHERE handle = ?", [actor.lower()])
    found = max(rows.fetchall(), key=lambda row: row[2] or 0, default=None)
    return None if found is None else (found[0], found[1])


def handles(con: Con, dids: Sequence[str]) -> dict[str, str | None]:
    if not dids:
        return {}
    rows = con.execute("SELECT did, handle FROM accounts WHERE did = ANY($dids)", {"dids": list(set(dids))})
    return dict(rows.fetchall())


def visible_tracks(con: Con, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], TrackRow]:
    """The visible ones among these (did, rkey) keys, fetched through the rkey index."""
    if not keys:
        return {}
    wanted = set(keys)
    marks = ", ".join("?" * len(wanted))
    sql = (
        f"WITH c AS MATERIALIZED (SELECT * FROM tracks WHERE rkey IN ({marks})) SELECT {COLUMNS} FROM c WHERE {VISIBLE}"
    )
    rows = _rows(con.execute(sql, [rkey for _, rkey in wanted]).fetchall())
    return {(row.did, row.rkey): row for row in rows if (row.did, row.rkey) in wanted}


def index_rows(con: Con, changed_since: int | None, batch: int = 50_000) -> Iterator[IndexRow]:
    """Rows for the search index: all live tracks, or every row (tombstones too) changed since a time."""
    columns = "did, rkey, deleted, title, artist, album, sort_us, coalesce(changed_us, 0)"
    if changed_since is None:
        result = con.execute(f"SELECT {columns} FROM tracks WHERE NOT deleted")
    else:
        result = con.execute(f"SELECT {columns} FROM tracks WHERE changed_us >= ?", [changed_since])
    while chunk := result.fetchmany(batch):
        yield from (IndexRow(*row) for row in chunk)


def _after(after: FeedKey | None) -> tuple[str, dict[str, object]]:
    if after is None:
        return "", {}
    return _AFTER, {"s": after[0], "d": after[1], "r": after[2]}


def _rows(rows: list[tuple]) -> list[TrackRow]:
    return [TrackRow(*row) for row in rows]
