"""The API's SQL: every read it makes of the index, each on a caller-supplied DuckDB cursor.

Feeds order by (sort_us, did, rkey) descending and page by keyset: the leading `sort_us <= $s` conjunct
lets DuckDB skip row groups by their min/max, so a deep page costs about what the first one does. Lookups
by account first pull that account's rows through the `did` index in a MATERIALIZED CTE: with the
visibility filters in the same scan DuckDB would otherwise choose a full table scan (~50 ms at 1M rows
against ~2 ms).
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from appview_api.views import COLUMNS, TrackRow

Con = duckdb.DuckDBPyConnection
FeedKey = tuple[int, str, str]  # sort_us, did, rkey
SearchKey = tuple[int, int, str, str]  # score, sort_us, did, rkey

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
    sql = (
        f"WITH mine AS MATERIALIZED (SELECT * FROM tracks WHERE did = $did) "
        f"SELECT {COLUMNS} FROM mine WHERE rkey = $rkey AND {VISIBLE}"
    )
    rows = _rows(con.execute(sql, {"did": did, "rkey": rkey}).fetchall())
    return rows[0] if rows else None


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


def search_page(
    con: Con, terms: Sequence[str], limit: int, after: SearchKey | None
) -> tuple[list[tuple[int, TrackRow]], int]:
    """Rows matching every term (substring of title, artist or album), best first; and the total match count.

    The score ranks a term found in the title above one in the artist above one in the album, and a title
    equal to (or starting with) the whole query above all: integers, so the score can be part of the key.
    """
    params: dict[str, object] = {"n": limit, "phrase": " ".join(terms)}
    matches, scores = [], []
    for i, term in enumerate(terms):
        params[f"p{i}"] = "%" + _escape_like(term) + "%"
        like = [f"{column} ILIKE $p{i} ESCAPE '\\'" for column in ("title", "artist", "album")]
        matches.append("(" + " OR ".join(like) + ")")
        scores.append(
            f"(CASE WHEN {like[0]} THEN 4 ELSE 0 END + CASE WHEN {like[1]} THEN 2 ELSE 0 END "
            f"+ CASE WHEN coalesce({like[2]}, false) THEN 1 ELSE 0 END)"
        )
    phrase = "CASE WHEN lower(title) = $phrase THEN 8 WHEN starts_with(lower(title), $phrase) THEN 4 ELSE 0 END"
    where = ""
    if after is not None:
        where = "WHERE score <= $sc AND (score < $sc OR sort_us < $s OR (sort_us = $s AND (did < $d OR "
        where += "(did = $d AND rkey < $r))))"
        params.update(sc=after[0], s=after[1], d=after[2], r=after[3])
    sql = (
        f"SELECT {COLUMNS}, score, total FROM ("
        f" SELECT {COLUMNS}, {' + '.join(scores)} + {phrase} AS score, count(*) OVER () AS total"
        f" FROM tracks WHERE {VISIBLE} AND {' AND '.join(matches)}"
        f") {where} ORDER BY score DESC, {_ORDER} LIMIT $n"
    )
    rows = con.execute(sql, params).fetchall()
    total = rows[0][-1] if rows else 0
    return [(row[-2], TrackRow(*row[:-2])) for row in rows], total


def _after(after: FeedKey | None) -> tuple[str, dict[str, object]]:
    if after is None:
        return "", {}
    return _AFTER, {"s": after[0], "d": after[1], "r": after[2]}


def _rows(rows: list[tuple]) -> list[TrackRow]:
    return [TrackRow(*row) for row in rows]


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
