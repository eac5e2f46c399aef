"""The PostgreSQL backend: one database shared by one indexer and any number of API replicas.

Same meaning as `duckdb_store.py`, statement for statement (`pg_sql.py` holds the statements); what differs
is what sharing needs:

- **A batch is one transaction**, its cursor included: after a crash the index holds exactly the batches
  up to the stored cursor.
- **Stamps rise in commit order, across processes.** A replica catches up by reading the rows stamped
  after the largest stamp it has seen, which is right only if no transaction can commit a smaller stamp
  after a reader saw a larger one. With one clock per process that breaks: process A stamps 100, B stamps
  101 and commits first, a reader sees 101, then A commits 100 and the reader never looks below 101
  again. So every write the catalog must see first updates the one-row `clock` table and takes its stamp
  from it: the row lock holds the next writer until this one has committed (PostgreSQL makes a commit
  visible before it frees the locks), so a later stamp always belongs to a later commit, and any snapshot
  that shows a stamp shows every smaller one. Writes are serialized by it across processes; the indexer
  is nearly the only writer (a publish waits at most for the batch in hand).
- **Exactly one indexer.** A batch that carries a Jetstream cursor is written only on a connection that
  holds the writer lock (a session advisory lock), taking it there if it is free: if the connection drops,
  the lock goes with it, and a new connection must take it again before it writes a batch. `lead()` is
  how a standby waits for it.
- **Signals.** Each such write also signals (`pg_listen.py`); other processes bump `generation` when
  signalled, so their catalogs catch up without polling the tables.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from indexer import __version__
from indexer.atproto.datetimes import iso_from_us
from indexer.db import pg_sql as sql
from indexer.db import sync_sql
from indexer.db.batch import (
    SYNCED,
    TRACK_SCHEMA,
    AccountChange,
    Batch,
    DiscoveryPage,
    ProofOutcomes,
    SyncBatch,
    account_table,
    sync_statuses,
)
from indexer.db.pg_connect import Connection, Pool, connect, guarded, redacted, translated, usable
from indexer.db.pg_listen import Listener
from indexer.db.pg_schema import MIGRATIONS
from indexer.db.rows import (
    AccountRow,
    AudioResult,
    DiscoveryRun,
    ProofJob,
    Status,
    StoredCursor,
    SyncClaim,
    SyncProgress,
    TrackRow,
)
from indexer.db.store import WINDOW_GAP_KEY, now_us
from indexer.errors import StoreUnavailable

log = logging.getLogger(__name__)

READERS = 4  # idle read connections kept: the API's read threads
_CATALOG_BATCH = 20_000
_CSV = pacsv.WriteOptions(include_header=False)


class PgStore:
    def __init__(self, url: str, *, recheck_seconds: float = 86400.0, read_only: bool = False) -> None:
        """`read_only`: look, never write; the schema must be there already."""
        self.url = url
        self.generation = 0  # bumped after every commit that changes what readers see, here or signalled
        self._bump_lock = threading.Lock()
        self._recheck_us = int(recheck_seconds * 1_000_000)
        self._pool = Pool(url, READERS)
        self._writer: Connection | None = None
        self._writer_used = 0.0
        self._leading = False
        self._listener: Listener | None = None
        self._listener_lock = threading.Lock()
        with translated(), self._pool.connection() as con:
            if read_only:
                self._check_schema(con)
            else:
                self._migrate(con)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._writer is not None:
            self._writer.close()
        self._pool.close()

    # -- reads -------------------------------------------------------------------------------------

    @guarded
    def cursor(self) -> StoredCursor | None:
        row = self._one("SELECT time_us, source, updated_us FROM cursor")
        return StoredCursor(*row) if row else None

    @guarded
    def known_accounts(self) -> dict[str, int]:
        return dict(self._all("SELECT did, coalesce(since_us, 0) FROM accounts"))

    @guarded
    def pending_urls(self) -> list[str]:
        rows = self._all("SELECT DISTINCT audio_url FROM tracks WHERE audio_state = 'pending' AND NOT deleted")
        return [url for (url,) in rows]

    @guarded
    def unresolved_dids(self) -> list[str]:
        return [did for (did,) in self._all("SELECT did FROM accounts WHERE handle_resolved_us IS NULL")]

    @guarded
    def pending_proofs(self, now_us: int) -> list[ProofJob]:
        return [ProofJob(*row) for row in self._all(sql.PENDING_PROOFS, now_us)]

    @guarded
    def unproven(self, jobs: list[ProofJob]) -> list[ProofJob]:
        if not jobs:
            return []
        columns = ([j.did for j in jobs], [j.rkey for j in jobs], [j.rev for j in jobs])
        return [ProofJob(*row) for row in self._all(sql.UNPROVEN, *columns)]

    @guarded
    def stale_audio(self, checked_before_us: int, limit: int) -> list[str]:
        return [url for (url,) in self._all(sql.STALE_AUDIO, checked_before_us, limit)]

    @guarded
    def stale_handles(self, resolved_before_us: int, limit: int) -> list[str]:
        return [did for (did,) in self._all(sql.STALE_HANDLES, resolved_before_us, limit)]

    @guarded
    def account_bytes(self, did: str) -> int:
        row = self._one(sql.ACCOUNT_BYTES, did)
        return int(row[0]) if row else 0

    @guarded
    def meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = %s", key)
        return row[0] if row else None

    @contextmanager
    def catalog(self) -> Iterator[_Snapshot]:
        """Reads in one REPEATABLE READ transaction, so they all see the same commits. The first one
        starts listening for signals before its snapshot, so no commit falls between the two."""
        self._listen()
        with translated(), self._pool.connection() as con, con.transaction():
            con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield _Snapshot(con)

    @guarded
    def key_in_use(self, key: str, besides: tuple[str, str] | None = None) -> bool:
        # The URL's last segment finds the object whether it was published while the audio lived on local
        # disk or in R2 (DuckDB's `ends_with(audio_url, '/' || key)`; a key holds no '/'; the expression
        # is indexed).
        did, rkey = besides or ("", "")
        return self._one(sql.KEY_IN_USE, key, "/" + key, "/" + key, did, rkey) is not None

    @guarded
    def status(self, recent_rejections: int) -> Status:
        cursor = self.cursor()
        tracks = dict(self._all(sql.TRACK_STATES))
        rejections = self._all(sql.RECENT_REJECTIONS, recent_rejections)
        return {
            "version": __version__,
            "cursor": None
            if cursor is None
            else {
                "time_us": cursor.time_us,
                "time": iso_from_us(cursor.time_us),
                "lag_seconds": max(time.time() - cursor.time_us / 1_000_000, 0.0),
                "source": cursor.source,
            },
            "tracks": tracks,
            "accounts": self._count("accounts"),
            "rejections_total": self._count("rejections"),
            "recent_rejections": [
                {"uri": uri, "rev": rev, "reason": reason, "at": iso_from_us(at)}
                for uri, rev, reason, at in rejections
            ],
            **sync_sql.status_parts(
                self.sync_progress(),
                self.discovery_runs(),
                self.meta(WINDOW_GAP_KEY),
                self._all(sync_sql.RECENT_FAILURES, recent_rejections),
            ),
        }

    @guarded
    def sync_progress(self, since_us: int = 0) -> SyncProgress:
        return sync_sql.progress(self._all(sync_sql.PROGRESS, since_us))

    @guarded
    def discovery_runs(self) -> list[DiscoveryRun]:
        return [DiscoveryRun(*row) for row in self._all(sync_sql.DISCOVERY_RUNS)]

    @guarded
    def oauth_session(self, key: str) -> bytes | None:
        row = self._one("SELECT sealed FROM oauth_sessions WHERE id = %s", key)
        return bytes(row[0]) if row else None

    # -- writes (writer thread only) ---------------------------------------------------------------

    @guarded
    def lead(self) -> bool:
        """Hold the indexer's writer lock on the write connection, taking it if it is free."""
        with self._transaction() as con:
            return self._take_lock(con)

    @guarded
    def apply(self, batch: Batch, source: str | None) -> list[str]:
        """The whole batch in one transaction, its cursor included (under the writer lock)."""
        pending: list[str] = []
        with self._transaction() as con:
            if batch.cursor is not None and not self._take_lock(con):
                raise StoreUnavailable("another indexer holds the writer lock")
            stamp = self._stamp(con)
            if batch.new_accounts:
                new = pa.table({"did": list(batch.new_accounts), "since_us": list(batch.new_accounts.values())})
                _stage(con, "new_accounts", new)
                con.execute(sql.INSERT_ACCOUNTS, {"stamp": stamp})
                con.execute(sync_sql.REQUEST_NEW, (sync_sql.FIRST_SEEN, stamp))
            for segment in batch.segments:
                if segment.accounts:
                    self._apply_accounts(con, segment.accounts, stamp)
                if segment.tracks is not None:
                    pending.extend(self._apply_tracks(con, segment.tracks, stamp))
            if batch.rejections:
                con.cursor().executemany(
                    sql.INSERT_REJECTION,
                    [(_text(r.uri), _text(r.rev), _text(r.reason), r.time_us, stamp) for r in batch.rejections],
                )
            if batch.cursor is not None:
                con.execute(sql.ADVANCE_CURSOR, (batch.cursor, source, stamp))
            if batch.gap is not None:
                self._request_all(con, sync_sql.gap_reason(batch.gap), stamp)
                con.execute(sql.SET_META, (WINDOW_GAP_KEY, sync_sql.gap_json(batch.gap)))
            if batch.has_changes:
                _signal(con)
        if batch.has_changes:
            self._bump()
        return pending

    def _apply_tracks(self, con: Connection, staged: pa.Table, stamp: int) -> list[str]:
        _stage(con, "staged", staged)
        fresh_after = stamp - self._recheck_us
        con.execute(sql.UPSERT_TRACKS, {"now": stamp, "fresh_after": fresh_after})
        rows = con.execute(sql.NEEDS_CHECK, (fresh_after,)).fetchall()
        return [url for (url,) in rows]

    def _apply_accounts(self, con: Connection, changes: list[AccountChange], stamp: int) -> None:
        """Purge first, judged against the key held before this change; then the newer state; then which of
        the accounts' tracks show."""
        table = account_table(changes)
        _stage(con, "changed", table)
        con.execute(sql.PURGE, {"stamp": stamp})
        con.execute(sql.ACCOUNT_STATES)
        con.execute(sql.ACCOUNT_VISIBILITY, (stamp,))
        con.execute(sync_sql.REACTIVATED, (stamp,))

    # -- repository syncs ------------------------------------------------------------------------------

    @guarded
    def claim_syncs(self, now_us: int, limit: int) -> list[SyncClaim]:
        with self._transaction() as con:
            rows = con.execute(sync_sql.CLAIM, (now_us, limit)).fetchall()
        return [SyncClaim(*row) for row in rows]

    @guarded
    def reset_syncs(self) -> int:
        with self._transaction() as con:
            return len(con.execute(sync_sql.RESET).fetchall())

    @guarded
    def apply_syncs(self, batch: SyncBatch) -> list[str]:
        """As DuckDB's: one transaction for the batch's syncs."""
        pending: list[str] = []
        synced = [r for r in batch.results if r.state == SYNCED]
        with self._transaction() as con:
            stamp = self._stamp(con)
            new = {r.did: r.since_us for r in synced if r.since_us is not None}
            if new:
                _stage(con, "new_accounts", pa.table({"did": list(new), "since_us": list(new.values())}))
                con.execute(sql.INSERT_ACCOUNTS, {"stamp": stamp})
            statuses = sync_statuses(batch)
            if statuses:
                self._apply_accounts(con, statuses, stamp)
            _stage(con, "synced", sync_sql.synced_table(batch.results))
            _stage(con, "sync_results", sync_sql.results_table(batch.results))
            _stage(con, "staged", batch.tracks if batch.tracks is not None else TRACK_SCHEMA.empty_table())
            if batch.tracks is not None:
                fresh_after = stamp - self._recheck_us
                con.execute(sql.UPSERT_TRACKS, {"now": stamp, "fresh_after": fresh_after})
                pending = [url for (url,) in con.execute(sql.NEEDS_CHECK, (fresh_after,)).fetchall()]
            if synced:
                con.execute(sync_sql.GONE, (stamp,))
            con.execute(sync_sql.SAVE_RESULTS, (stamp,))
            if batch.rejections:
                con.cursor().executemany(
                    sql.INSERT_REJECTION,
                    [(_text(r.uri), _text(r.rev), _text(r.reason), r.time_us, stamp) for r in batch.rejections],
                )
            _signal(con)
        self._bump()
        return pending

    @guarded
    def request_syncs(self, dids: list[str] | None, reason: str) -> int:
        with self._transaction() as con:
            stamp = self._stamp(con)
            if dids is None:
                return self._request_all(con, reason, stamp)
            _stage(con, "asked", sync_sql.dids_table(dids))
            con.execute(sync_sql.REQUEST_DIDS, (reason, stamp))
        return len(set(dids))

    def _request_all(self, con: Connection, reason: str, stamp: int) -> int:
        con.execute(sync_sql.ADD_KNOWN, (reason, stamp))
        con.execute(sync_sql.REQUEST_ALL, (reason, stamp))
        con.execute(sync_sql.RESTART_DISCOVERY, (stamp,))
        row = con.execute("SELECT count(*) FROM account_syncs WHERE requested_us = %s", (stamp,)).fetchone()
        return int(row[0]) if row else 0

    @guarded
    def record_discovery(self, page: DiscoveryPage) -> None:
        with self._transaction() as con:
            stamp = self._stamp(con)
            _stage(con, "listed", sync_sql.dids_table(page.dids))
            con.execute(sync_sql.DISCOVERED, (sync_sql.listed_reason(page.relay), stamp))
            con.execute(sync_sql.DISCOVERY_PAGE, sync_sql.discovery_row(page, stamp))

    @guarded
    def apply_proofs(self, outcomes: ProofOutcomes) -> list[str]:
        pending: list[str] = []
        with self._transaction() as con:
            stamp = self._stamp(con)
            if outcomes.overruled:
                con.cursor().executemany(sql.OVERRULE, [(j.did, j.rkey, j.rev) for j in outcomes.overruled])
            if outcomes.superseded is not None:
                pending = self._apply_tracks(con, outcomes.superseded, stamp)
            if outcomes.marks:
                con.cursor().executemany(
                    sql.MARK_PROOF, [(m.proof, m.reason, stamp, m.did, m.rkey, m.rev) for m in outcomes.marks]
                )
            if outcomes.delays:
                con.cursor().executemany(
                    sql.DELAY_PROOF, [(d.reason, d.after_us, d.did, d.rkey, d.rev) for d in outcomes.delays]
                )
            if outcomes.rejections:
                con.cursor().executemany(
                    sql.INSERT_REJECTION,
                    [(_text(r.uri), _text(r.rev), _text(r.reason), r.time_us, stamp) for r in outcomes.rejections],
                )
            _signal(con)
        self._bump()
        return pending

    @guarded
    def record_audio(self, results: Iterable[AudioResult]) -> None:
        latest = {r.url: r for r in results}  # one row a URL: an upsert may touch a row once
        if not latest:
            return
        with self._transaction() as con:
            stamp = self._stamp(con)
            table = pa.table(
                {
                    "url": [r.url for r in latest.values()],
                    "state": [str(r.state) for r in latest.values()],
                    "reason": [r.reason for r in latest.values()],
                    "status": pa.array([r.status for r in latest.values()], pa.int32()),
                    "content_type": pa.array([r.content_type for r in latest.values()], pa.string()),
                    "checked_us": pa.array([stamp] * len(latest), pa.int64()),
                }
            )
            _stage(con, "results", table)
            con.execute(sql.UPSERT_AUDIO_CHECKS)
            con.execute(sql.CARRY_AUDIO_VERDICTS, (stamp,))
            _signal(con)
        self._bump()

    @guarded
    def set_handles(self, handles: Mapping[str, str | None]) -> None:
        with self._transaction() as con:
            stamp = self._stamp(con)
            con.cursor().executemany(
                "UPDATE accounts SET handle = %s, handle_resolved_us = %s WHERE did = %s",
                [(None if handle is None else _text(handle), stamp, did) for did, handle in handles.items()],
            )
            _signal(con)
        self._bump()

    @guarded
    def record_upload(self, did: str, key: str, size: int) -> None:
        with self._transaction() as con:
            con.execute(sql.RECORD_UPLOAD, (did, key, size, now_us()))

    @guarded
    def rewind(self, time_us: int, source: str | None) -> None:
        with self._transaction() as con:
            if not self._take_lock(con):
                raise StoreUnavailable("another indexer holds the writer lock")
            con.execute(sql.SET_CURSOR, (time_us, source, now_us()))

    @guarded
    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as con:
            con.execute(sql.SET_META, (key, value))

    @guarded
    def keep_meta(self, key: str, value: str, replace: str | None) -> str:
        with self._transaction() as con:
            row = con.execute(sql.KEEP_META, {"key": key, "value": value, "replace": replace}).fetchone()
            if row is None:  # another value was there, and stays
                row = con.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        assert row is not None
        return str(row[0])

    @guarded
    def save_oauth_session(self, key: str, did: str, sealed: bytes) -> None:
        now = now_us()
        with self._transaction() as con:
            con.execute(sql.SAVE_SESSION, (key, did, sealed, now, now))

    @guarded
    def delete_oauth_session(self, key: str) -> None:
        with self._transaction() as con:
            con.execute("DELETE FROM oauth_sessions WHERE id = %s", (key,))

    @guarded
    def save_oauth_request(self, key: str, sealed: bytes, expires_us: int) -> None:
        with self._transaction() as con:
            con.execute(sql.SAVE_REQUEST, (key, sealed, expires_us))

    @guarded
    def take_oauth_request(self, key: str, now_us: int) -> bytes | None:
        with self._transaction() as con:
            row = con.execute(sql.TAKE_REQUEST, (key,)).fetchone()
        if row is None or row[1] <= now_us:
            return None
        return bytes(row[0])

    @guarded
    def purge_oauth(self, now_us: int, idle_before_us: int) -> None:
        with self._transaction() as con:
            con.execute("DELETE FROM oauth_requests WHERE expires_us <= %s", (now_us,))
            con.execute("DELETE FROM oauth_sessions WHERE updated_us < %s", (idle_before_us,))

    # -- plumbing ----------------------------------------------------------------------------------

    def _stamp(self, con: Connection) -> int:
        """Take the clock (see the module's docstring): first in every stamped transaction."""
        row = con.execute(sql.TAKE_STAMP).fetchone()
        assert row is not None
        return int(row[0])

    def _take_lock(self, con: Connection) -> bool:
        if not self._leading:
            row = con.execute("SELECT pg_try_advisory_lock(%s)", (sql.WRITER_LOCK,)).fetchone()
            self._leading = bool(row and row[0])
        return self._leading

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A transaction on the write connection, opened again if it was lost (and the lock with it)."""
        con = self._writer
        if con is None or not usable(con, self._writer_used):
            if con is not None:
                con.close()
            self._leading = False
            con = self._writer = connect(self.url)
            for statement in sql.STAGING_TABLES:
                con.execute(statement)
        try:
            with con.transaction():
                yield con
        finally:
            self._writer_used = time.monotonic()

    def _bump(self) -> None:
        with self._bump_lock:
            self.generation += 1

    def _signalled(self, pid: int | None) -> None:
        writer = self._writer
        if pid is not None and writer is not None and not writer.closed and pid == writer.info.backend_pid:
            return  # our own commit: bumped already
        self._bump()

    def _listen(self) -> None:
        with self._listener_lock:
            if self._listener is None:
                self._listener = Listener(self.url, self._signalled)
                self._listener.start()

    def _one(self, query: str, *params: object) -> tuple[Any, ...] | None:
        with self._pool.connection() as con:
            return con.execute(query, params or None).fetchone()

    def _count(self, table: str) -> int:
        row = self._one(f"SELECT count(*) FROM {table}")
        return int(row[0]) if row else 0

    def _all(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        with self._pool.connection() as con:
            return con.execute(query, params or None).fetchall()

    def _check_schema(self, con: Connection) -> None:
        if con.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
            raise StoreUnavailable(f"{redacted(self.url)} is not a relay index")
        row = con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        if row is None or row[0] < len(MIGRATIONS):
            raise StoreUnavailable(f"{redacted(self.url)} is from an older version: `relay-appview serve` upgrades it")

    def _migrate(self, con: Connection) -> None:
        """Under a lock: replicas that start together migrate once."""
        with con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(%s)", (sql.MIGRATION_LOCK,))
            con.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_us bigint)")
            done = {v for (v,) in con.execute("SELECT version FROM schema_migrations").fetchall()}
            for version, statement in enumerate(MIGRATIONS, start=1):
                if version in done:
                    continue
                con.execute(statement)  # our own literal SQL
                con.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, now_us()))
                log.info("migrated version=%d db=%s", version, redacted(self.url))


class _Snapshot:
    def __init__(self, con: Connection) -> None:
        self._con = con

    @guarded
    def stamps(self) -> tuple[int, int]:
        row = self._con.execute(sql.STAMPS).fetchone()
        assert row is not None
        return row[0], row[1]

    @guarded
    def accounts(self, since: int | None) -> list[AccountRow]:
        if since is None:
            rows = self._con.execute(sql.CATALOG_ACCOUNTS).fetchall()
        else:
            rows = self._con.execute(sql.CATALOG_ACCOUNTS + f" WHERE {sql.ACCOUNT_STAMP} > %s", (since,)).fetchall()
        return [AccountRow._make(row) for row in rows]

    def tracks(self, since: int | None) -> Iterator[list[TrackRow]]:
        with translated(), self._con.cursor(name="catalog_tracks") as cur:
            if since is None:
                cur.execute(sql.CATALOG_TRACKS + f" WHERE {sql.VISIBLE}")
            else:
                cur.execute(sql.CATALOG_TRACKS + " WHERE changed_us > %s", (since,))
            while chunk := cur.fetchmany(_CATALOG_BATCH):
                yield [TrackRow._make(row) for row in chunk]


def _stage(con: Connection, table: str, rows: pa.Table) -> None:
    """Load an Arrow table into a session's staging table."""
    con.execute(f"TRUNCATE {table}")
    copy_rows(con, table, rows)


def copy_rows(con: Connection, table: str, rows: pa.Table) -> None:
    """Append an Arrow table's rows to `table`, columns by name, by COPY (CSV written by Arrow, in C++)."""
    buffer = io.BytesIO()
    pacsv.write_csv(_without_nul(rows), buffer, _CSV)
    with con.cursor().copy(f"COPY {table} ({', '.join(rows.column_names)}) FROM STDIN (FORMAT csv)") as copy:
        copy.write(buffer.getbuffer())


def _without_nul(rows: pa.Table) -> pa.Table:
    """PostgreSQL's text cannot hold U+0000 (DuckDB's can): a record with one would fail its batch forever,
    so it is stored as U+FFFD, the replacement character."""
    for number, field in enumerate(rows.schema):
        if field.type == pa.string():
            rows = rows.set_column(number, field, pc.replace_substring(rows.column(number), "\x00", "\ufffd"))
    return rows


def _text(value: str) -> str:
    return value.replace("\x00", "\ufffd")


def _signal(con: Connection) -> None:
    con.execute(sql.SIGNAL)
