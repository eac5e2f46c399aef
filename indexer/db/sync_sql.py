"""The statements of repository syncs (backfill), shared by both backends.

They are plain SQL that DuckDB and PostgreSQL read alike; placeholders are written `%s` (PostgreSQL's) and
DuckDB's store swaps them for `?` (`duck`). Each reads a small relation the store stages first:
`new_accounts` (did, since_us), `asked` / `listed` (did), `synced` (did, rev), `sync_results` (the columns
of `results_table`), and `staged` (the tracks, TRACK_SCHEMA).

A sync's records are written by the tracks' one upsert, which applies a row only over an older rev: the
stream's events and a repository's records merge by rev whatever order they commit in, so a live event
newer than the repository wins and nothing older overwrites what the repository proved.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import orjson
import pyarrow as pa

from indexer.atproto.datetimes import iso_from_us
from indexer.db.batch import SYNCED, DiscoveryPage, SyncResult, WindowGap
from indexer.db.rows import DiscoveryRun, SyncProgress
from indexer.db.store import NO_AUDIO

FIRST_SEEN = "first seen on the stream"
REACTIVATED_REASON = "the account is active again"


@functools.cache
def duck(statement: str) -> str:
    return statement.replace("%s", "?")


def listed_reason(relay: str) -> str:
    return f"listed by {relay}"


def gap_reason(gap: WindowGap | None) -> str:
    if gap is None:
        return "asked for"
    return f"the stream skipped {iso_from_us(gap.asked_us)} to {iso_from_us(gap.first_us)}"


def gap_json(gap: WindowGap) -> str:
    return orjson.dumps(
        {
            "askedCursor": gap.asked_us,
            "firstEvent": gap.first_us,
            "missedSeconds": round((gap.first_us - gap.asked_us) / 1e6, 1),
            "source": gap.source,
            "detectedAt": iso_from_us(gap.detected_us),
        }
    ).decode()


# New on the stream: its repository is asked for once (its tracks from before the stream showed it).
REQUEST_NEW = (
    "INSERT INTO account_syncs (did, state, reason, requested_us) SELECT did, 'pending', %s, %s FROM new_accounts "
    "ON CONFLICT DO NOTHING"
)
# Listed by a relay: asked for once; an account synced already is the stream's from then on.
DISCOVERED = (
    "INSERT INTO account_syncs (did, state, reason, requested_us) SELECT did, 'pending', %s, %s FROM listed "
    "ON CONFLICT DO NOTHING"
)
# Asked for by an operator: again now, unless a worker holds it (its sync is under way, newer than the ask).
REQUEST_DIDS = (
    "INSERT INTO account_syncs (did, state, reason, requested_us) SELECT did, 'pending', %s, %s FROM asked "
    "ON CONFLICT (did) DO UPDATE SET state = 'pending', reason = excluded.reason, "
    "requested_us = excluded.requested_us, next_us = 0, attempts = 0 WHERE account_syncs.state <> 'syncing'"
)
ADD_KNOWN = (
    "INSERT INTO account_syncs (did, state, reason, requested_us) SELECT did, 'pending', %s, %s FROM accounts "
    "ON CONFLICT DO NOTHING"
)
REQUEST_ALL = (
    "UPDATE account_syncs SET state = 'pending', reason = %s, requested_us = %s, next_us = 0, attempts = 0 "
    "WHERE state <> 'syncing'"
)
RESTART_DISCOVERY = "UPDATE discovery SET page_cursor = NULL, finished_us = NULL, started_us = %s, repos = 0"
# An account event that makes an account active again: a repository refused as taken down is asked again.
REACTIVATED = (
    f"UPDATE account_syncs SET state = 'pending', reason = '{REACTIVATED_REASON}', next_us = 0, requested_us = %s "
    "WHERE state = 'inactive' AND did IN (SELECT did FROM changed WHERE active)"
)

CLAIM = (
    "UPDATE account_syncs SET state = 'syncing' WHERE did IN ("
    " SELECT did FROM account_syncs WHERE state IN ('pending', 'failed') AND next_us <= %s"
    " ORDER BY next_us, requested_us, did LIMIT %s) "
    "RETURNING did, attempts"
)
RESET = "UPDATE account_syncs SET state = 'pending' WHERE state = 'syncing' RETURNING did"

# Records the repository no longer holds: deletes, at its rev (a track newer than the repository is the
# stream's, and stays).
GONE = f"""
UPDATE tracks SET deleted = true, rev = y.rev, cid = NULL, title = NULL, artist = NULL, album = NULL,
    audio_url = NULL, file_type = NULL, duration = NULL, created_at = NULL, audio_state = '{NO_AUDIO}',
    proof = 'proven', proof_reason = NULL, proof_after_us = 0, changed_us = %s
FROM synced y
WHERE tracks.did = y.did AND tracks.rev < y.rev AND NOT tracks.deleted
  AND NOT EXISTS (SELECT 1 FROM staged s WHERE s.did = tracks.did AND s.rkey = tracks.rkey)
"""
SAVE_RESULTS = """
UPDATE account_syncs SET state = r.state, reason = r.reason, attempts = r.attempts, next_us = r.next_us,
    rev = coalesce(r.rev, account_syncs.rev),
    synced_us = CASE WHEN r.state = 'synced' THEN %s ELSE account_syncs.synced_us END,
    records = CASE WHEN r.state = 'synced' THEN r.records ELSE account_syncs.records END
FROM sync_results r WHERE account_syncs.did = r.did
"""

DISCOVERY_PAGE = (
    "INSERT INTO discovery (relay, page_cursor, started_us, finished_us, repos) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (relay) DO UPDATE SET page_cursor = excluded.page_cursor, finished_us = excluded.finished_us, "
    "repos = CASE WHEN discovery.started_us = excluded.started_us THEN discovery.repos + excluded.repos "
    "ELSE excluded.repos END, started_us = excluded.started_us"
)
DISCOVERY_RUNS = "SELECT relay, page_cursor, started_us, finished_us, repos FROM discovery ORDER BY relay"
PROGRESS = (
    "SELECT state, count(*), coalesce(sum(CASE WHEN state = 'synced' THEN records ELSE 0 END), 0) "
    "FROM account_syncs WHERE requested_us >= %s GROUP BY state"
)
RECENT_FAILURES = (
    "SELECT did, state, reason, next_us FROM account_syncs WHERE state IN ('failed', 'inactive') "
    "ORDER BY next_us DESC, did LIMIT %s"
)


def discovery_row(page: DiscoveryPage, now: int) -> tuple[Any, ...]:
    return (page.relay, page.cursor, page.started_us, None if page.cursor else now, len(set(page.dids)))


def dids_table(dids: Sequence[str]) -> pa.Table:
    return pa.table({"did": pa.array(sorted(set(dids)), pa.string())})


def synced_table(results: Sequence[SyncResult]) -> pa.Table:
    synced = [r for r in results if r.state == SYNCED]
    return pa.table(
        {"did": pa.array([r.did for r in synced], pa.string()), "rev": pa.array([r.rev for r in synced], pa.string())}
    )


def results_table(results: Sequence[SyncResult]) -> pa.Table:
    return pa.table(
        {
            "did": pa.array([r.did for r in results], pa.string()),
            "state": pa.array([r.state for r in results], pa.string()),
            "reason": pa.array([r.reason for r in results], pa.string()),
            "rev": pa.array([r.rev for r in results], pa.string()),
            "records": pa.array([r.records for r in results], pa.int32()),
            "attempts": pa.array([r.attempts for r in results], pa.int32()),
            "next_us": pa.array([r.next_us for r in results], pa.int64()),
        }
    )


def progress(rows: Sequence[tuple[Any, ...]]) -> SyncProgress:
    return SyncProgress({state: int(n) for state, n, _ in rows}, sum(int(records) for _, _, records in rows))


def status_parts(
    progress: SyncProgress, runs: list[DiscoveryRun], gap: str | None, failures: Sequence[tuple[Any, ...]]
) -> dict[str, Any]:
    """`relay-appview status`'s backfill part: syncs by state, each relay's listing, the last stream gap."""
    return {
        "backfill": {
            "syncs": dict(sorted(progress.states.items())),
            "records": progress.records,
            "discovery": [
                {
                    "relay": run.relay,
                    "started": iso_from_us(run.started_us),
                    "finished": iso_from_us(run.finished_us) if run.finished_us else None,
                    "repos": run.repos,
                    "cursor": run.cursor,
                }
                for run in runs
            ],
            "recent_failures": [
                {"did": did, "state": state, "reason": reason, "next": iso_from_us(next_us) if next_us else None}
                for did, state, reason, next_us in failures
            ],
        },
        "window_gap": orjson.loads(gap) if gap else None,
    }
