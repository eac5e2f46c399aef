"""The DuckDB backend: the embedded default, one file, one writing process.

Inside the process every write runs on the writer thread (see `writer.py`) while readers take their own
cursors on the same database and see committed snapshots. The Jetstream cursor commits with the last of a
batch's changes, never before them, so after a crash (kill -9 included) the index holds at least the events
up to the stored cursor, and the replay from there ends in the same state (see `apply`). DuckDB's own errors
are turned into `StoreError` at this boundary.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import duckdb
import pyarrow as pa

from indexer import __version__
from indexer.atproto.datetimes import iso_from_us
from indexer.db import sync_sql
from indexer.db.batch import (
    SYNCED,
    TRACK_SCHEMA,
    AccountChange,
    Batch,
    DiscoveryPage,
    ProofOutcomes,
    Rejection,
    Segment,
    SyncBatch,
    account_table,
    sync_statuses,
)
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
from indexer.db.schema import MIGRATIONS
from indexer.db.store import NO_AUDIO, WINDOW_GAP_KEY, now_us
from indexer.errors import StoreError, StoreUnavailable

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
Con = duckdb.DuckDBPyConnection

# Shown: audio that answers, a record its PDS proved (or one nobody asked to prove: RELAY_VERIFY_RECORDS off),
# and an active account.
VISIBLE = "audio_state = 'verified' AND proof IN ('proven', 'unverified') AND NOT deleted AND NOT hidden"
_TRACK_COLUMNS = (
    f"did, rkey, {VISIBLE}, cid, title, artist, album, audio_url, file_type, duration, created_at, indexed_us, "
    "sort_us, coalesce(changed_us, 0)"
)
_ACCOUNT_STAMP = "greatest(first_seen_us, coalesce(handle_resolved_us, 0))"
_CATALOG_BATCH = 20_000


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except (duckdb.ConnectionException, duckdb.IOException) as exc:
        raise StoreUnavailable(f"the database is unavailable: {_first_line(exc)}") from exc
    except duckdb.Error as exc:
        raise StoreError(f"database error: {_first_line(exc)}") from exc
    except (pa.ArrowException, OverflowError) as exc:  # a value no column can hold, found building a table
        raise StoreError(f"database error: {_first_line(exc)}") from exc


def _guarded(method: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with _translated():
            return method(*args, **kwargs)

    return wrapper


class DuckDBStore:
    def __init__(self, path: Path | str, *, recheck_seconds: float = 86400.0, read_only: bool = False) -> None:
        """`read_only`: for looking at a database (`status`), which must exist already; works on a read-only
        filesystem, and never creates, migrates or writes anything."""
        self.path = Path(path)
        if read_only and not self.path.is_file():
            raise StoreUnavailable(f"no database at {path}")
        if str(path) != ":memory:" and not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            raise StoreUnavailable(f"cannot open the database {path}: {_first_line(exc)}") from exc
        with _translated():
            self._local = threading.local()
            self._recheck_us = int(recheck_seconds * 1_000_000)
            self.generation = 0
            if read_only:
                self._check_schema()
            else:
                # At the default 16 MB, checkpoints came so often under replay that commits grew with the
                # table (27 ms to 200 ms a batch by 100k tracks); 256 MB keeps a batch flat and bounds WAL replay.
                self._con.execute("SET checkpoint_threshold = '256MB'")
                self._migrate()
            row = self._con.execute(
                "SELECT greatest((SELECT max(changed_us) FROM tracks), (SELECT max(first_seen_us) FROM accounts), "
                "(SELECT max(handle_resolved_us) FROM accounts), 0)"
            ).fetchone()
        self._last_stamp: int = row[0] if row else 0

    def close(self) -> None:
        self._con.close()

    # -- reads -------------------------------------------------------------------------------------

    def reader(self) -> Con:
        """A connection for the calling thread (DuckDB connections are not shared across threads)."""
        con: Con | None = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = self._con.cursor()
        return con

    @_guarded
    def cursor(self) -> StoredCursor | None:
        row = self.reader().execute("SELECT time_us, source, updated_us FROM cursor").fetchone()
        return StoredCursor(*row) if row else None

    @_guarded
    def known_accounts(self) -> dict[str, int]:
        return dict(self.reader().execute("SELECT did, coalesce(since_us, 0) FROM accounts").fetchall())

    @_guarded
    def pending_urls(self) -> list[str]:
        rows = self.reader().execute(
            "SELECT DISTINCT audio_url FROM tracks WHERE audio_state = 'pending' AND NOT deleted"
        ).fetchall()
        return [url for (url,) in rows]

    @_guarded
    def unresolved_dids(self) -> list[str]:
        rows = self.reader().execute("SELECT did FROM accounts WHERE handle_resolved_us IS NULL").fetchall()
        return [did for (did,) in rows]

    @_guarded
    def pending_proofs(self, now_us: int) -> list[ProofJob]:
        rows = self.reader().execute(
            "SELECT did, rkey, rev, cid FROM tracks WHERE proof = 'pending' AND proof_after_us <= ?", [now_us]
        ).fetchall()
        return [ProofJob(*row) for row in rows]

    @_guarded
    def unproven(self, jobs: list[ProofJob]) -> list[ProofJob]:
        if not jobs:
            return []
        con = self.reader()
        with _registered(con, "jobs", _rows(jobs, "did", "rkey", "rev")):
            rows = con.execute(
                "SELECT t.did, t.rkey, t.rev, t.cid FROM jobs j JOIN tracks t "
                "ON t.did = j.did AND t.rkey = j.rkey AND t.rev = j.rev WHERE t.proof = 'pending'"
            ).fetchall()
        return [ProofJob(*row) for row in rows]

    @_guarded
    def stale_audio(self, checked_before_us: int, limit: int) -> list[str]:
        rows = self.reader().execute(
            "SELECT url FROM audio_checks WHERE state IN ('verified', 'unavailable') AND checked_us < ? "
            "ORDER BY checked_us LIMIT ?",
            [checked_before_us, limit],
        ).fetchall()
        return [url for (url,) in rows]

    @_guarded
    def stale_handles(self, resolved_before_us: int, limit: int) -> list[str]:
        rows = self.reader().execute(
            "SELECT did FROM accounts WHERE handle_resolved_us < ? ORDER BY handle_resolved_us LIMIT ?",
            [resolved_before_us, limit],
        ).fetchall()
        return [did for (did,) in rows]

    @_guarded
    def meta(self, key: str) -> str | None:
        row = self.reader().execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    @contextmanager
    def catalog(self) -> Iterator[_Snapshot]:
        """Reads in one transaction, so they all see the same commits."""
        with _translated():  # a closed database fails as early as making this thread's cursor
            con = self.reader()
            con.execute("BEGIN TRANSACTION")
        try:
            yield _Snapshot(con)
        except BaseException:
            try:
                con.execute("ROLLBACK")
            except duckdb.Error as exc:
                log.debug("rollback of a read failed error=%s", _first_line(exc))
            raise
        with _translated():
            con.execute("COMMIT")

    @_guarded
    def key_in_use(self, key: str, besides: tuple[str, str] | None = None) -> bool:
        # The URL's last segment finds the object whether it was published while the audio lived on local
        # disk or in R2: the key is a sha256, so no other URL ends with it by chance.
        did, rkey = besides or ("", "")
        row = self.reader().execute(
            "SELECT 1 FROM tracks WHERE NOT deleted AND ends_with(audio_url, ?) AND NOT (did = ? AND rkey = ?) LIMIT 1",
            ["/" + key, did, rkey],
        ).fetchone()
        return row is not None

    @_guarded
    def status(self, recent_rejections: int) -> Status:
        con = self.reader()
        cursor = self.cursor()
        tracks = dict(
            con.execute(
                "SELECT CASE WHEN deleted THEN 'deleted' WHEN hidden THEN 'hidden' WHEN proof = 'forged' THEN 'forged' "
                "WHEN proof = 'pending' THEN 'unproven' ELSE audio_state END AS state, "
                "count(*) FROM tracks GROUP BY state ORDER BY state"
            ).fetchall()
        )
        rejections = con.execute(
            "SELECT uri, rev, reason, rejected_us FROM rejections ORDER BY rejected_us DESC LIMIT ?",
            [recent_rejections],
        ).fetchall()
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
            "accounts": _scalar(con, "SELECT count(*) FROM accounts"),
            "rejections_total": _scalar(con, "SELECT count(*) FROM rejections"),
            "recent_rejections": [
                {"uri": uri, "rev": rev, "reason": reason, "at": iso_from_us(at)} for uri, rev, reason, at in rejections
            ],
            **sync_sql.status_parts(
                self.sync_progress(),
                self.discovery_runs(),
                self.meta(WINDOW_GAP_KEY),
                con.execute(sync_sql.duck(sync_sql.RECENT_FAILURES), [recent_rejections]).fetchall(),
            ),
        }

    @_guarded
    def oauth_session(self, key: str) -> bytes | None:
        row = self.reader().execute("SELECT sealed FROM oauth_sessions WHERE id = ?", [key]).fetchone()
        return bytes(row[0]) if row else None

    @_guarded
    def sync_progress(self, since_us: int = 0) -> SyncProgress:
        rows = self.reader().execute(sync_sql.duck(sync_sql.PROGRESS), [since_us]).fetchall()
        return sync_sql.progress(rows)

    @_guarded
    def discovery_runs(self) -> list[DiscoveryRun]:
        return [DiscoveryRun(*row) for row in self.reader().execute(sync_sql.DISCOVERY_RUNS).fetchall()]

    # -- writes (writer thread only) ---------------------------------------------------------------

    def lead(self) -> bool:
        """Always: the file is this process's alone (DuckDB lets one process open it for writing)."""
        return True

    @_guarded
    def apply(self, batch: Batch, source: str | None) -> list[str]:
        """One transaction a segment, the cursor with the last. DuckDB 2.0.1 corrupted a string segment now
        and then ("Corrupted uncompressed string segment", about 1 run in 15 of a 106-segment batch) when
        one transaction upserted the same table many times; a transaction per upsert never did in 40 runs.
        Splitting is safe because every change replays to the same state: a crash between two segments
        leaves the cursor where it was, and the replay of the segments already committed changes nothing."""
        pending: list[str] = []
        segments = batch.segments or [Segment()]
        for number, segment in enumerate(segments):
            stamp = self._stamp()  # a stamp per commit: readers catch up by `changed_us > last stamp seen`
            with self._transaction() as con:
                if number == 0 and batch.new_accounts:
                    self._insert_accounts(con, batch.new_accounts, stamp)
                if segment.accounts:
                    self._apply_accounts(con, segment.accounts, stamp)
                if segment.tracks is not None:
                    pending.extend(self._apply_tracks(con, segment.tracks, stamp))
                if number == len(segments) - 1:
                    self._finish_batch(con, batch, source, stamp)
        if batch.has_changes:
            self.generation += 1
        return pending

    def _insert_accounts(self, con: Con, accounts: dict[str, int], stamp: int, *, sync: bool = True) -> None:
        """`sync`: ask each new account's repository too (its tracks from before the stream showed it)."""
        table = pa.table({"did": list(accounts), "since_us": list(accounts.values())})
        with _registered(con, "new_accounts", table):
            con.execute(
                "INSERT INTO accounts (did, first_seen_us, since_us) SELECT did, ?, since_us FROM new_accounts "
                "ON CONFLICT DO NOTHING",
                [stamp],
            )
            if sync:
                con.execute(sync_sql.duck(sync_sql.REQUEST_NEW), [sync_sql.FIRST_SEEN, stamp])

    def _finish_batch(self, con: Con, batch: Batch, source: str | None, stamp: int) -> None:
        if batch.rejections:
            _insert_rejections(con, batch.rejections, stamp)
        if batch.cursor is not None:
            # Monotonic: a reconnect's rewind replays older events but must not move the cursor back.
            con.execute(
                "INSERT INTO cursor VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "time_us = greatest(cursor.time_us, excluded.time_us), source = excluded.source, "
                "updated_us = excluded.updated_us",
                [batch.cursor, source, stamp],
            )
        if batch.gap is not None:
            self._request_all(con, sync_sql.gap_reason(batch.gap), stamp)
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [WINDOW_GAP_KEY, sync_sql.gap_json(batch.gap)])

    def _apply_tracks(self, con: Con, staged: pa.Table, stamp: int) -> list[str]:
        with _registered(con, "staged", staged):
            return self._upsert_staged(con, stamp)

    def _upsert_staged(self, con: Con, stamp: int) -> list[str]:
        """Upsert the registered `staged` relation (each row only over an older rev); returns the audio URLs
        that need a check."""
        fresh_after = stamp - self._recheck_us
        con.execute(_UPSERT_TRACKS, {"now": stamp, "fresh_after": fresh_after})
        rows = con.execute(
            "SELECT DISTINCT s.audio_url FROM staged s WHERE NOT s.deleted AND NOT EXISTS ("
            " SELECT 1 FROM audio_checks c WHERE c.url = s.audio_url AND c.checked_us > ?)",
            [fresh_after],
        ).fetchall()
        return [url for (url,) in rows]

    def _apply_accounts(self, con: Con, changes: list[AccountChange], stamp: int) -> None:
        """Purge first, judged against the key held before this change; then the newer state; then which of
        the accounts' tracks show."""
        table = account_table(changes)
        with _registered(con, "changed", table):
            con.execute(_PURGE, {"stamp": stamp})
            con.execute(
                "UPDATE accounts SET active = c.active, status = c.status, status_at_us = c.at_us, seq = c.seq "
                "FROM changed c WHERE accounts.did = c.did AND (accounts.status_at_us < c.at_us "
                "OR (accounts.status_at_us = c.at_us AND accounts.seq < c.seq))"
            )
            con.execute(
                "UPDATE tracks SET hidden = NOT a.active, changed_us = ? FROM accounts a "
                "WHERE tracks.did = a.did AND a.did IN (SELECT did FROM changed) AND tracks.hidden = a.active",
                [stamp],
            )
            con.execute(sync_sql.duck(sync_sql.REACTIVATED), [stamp])

    @_guarded
    def apply_proofs(self, outcomes: ProofOutcomes) -> list[str]:
        stamp = self._stamp()
        pending: list[str] = []
        with self._transaction() as con:
            # Each statement joins a table of its rows (executemany would run one statement a row, each
            # a scan); every one touches only the row as it was proved: a newer event waits for its own.
            if outcomes.overruled:
                with _registered(con, "claims", _rows(outcomes.overruled, "did", "rkey", "rev")):
                    con.execute(_OVERRULE)
            if outcomes.superseded is not None:
                pending = self._apply_tracks(con, outcomes.superseded, stamp)
            if outcomes.marks:
                with _registered(con, "marks", _rows(outcomes.marks, "did", "rkey", "rev", "proof", "reason")):
                    con.execute(_MARK_PROOFS, [stamp])
            if outcomes.delays:
                with _registered(con, "delays", _rows(outcomes.delays, "did", "rkey", "rev", "reason", "after_us")):
                    con.execute(_DELAY_PROOFS)
            if outcomes.rejections:
                _insert_rejections(con, outcomes.rejections, stamp)
        self.generation += 1
        return pending

    # -- repository syncs ------------------------------------------------------------------------------

    @_guarded
    def claim_syncs(self, now_us: int, limit: int) -> list[SyncClaim]:
        with self._transaction() as con:
            rows = con.execute(sync_sql.duck(sync_sql.CLAIM), [now_us, limit]).fetchall()
        return [SyncClaim(*row) for row in rows]

    @_guarded
    def reset_syncs(self) -> int:
        with self._transaction() as con:
            return len(con.execute(sync_sql.RESET).fetchall())

    @_guarded
    def apply_syncs(self, batch: SyncBatch) -> list[str]:
        """One transaction: accounts new to the index, the statuses the PDSes showed, the records (proven, at
        each repository's rev, merged by rev with what the stream applied), tombstones for records gone, and
        each sync's state. A crash before its commit leaves the syncs `syncing`: `reset_syncs` redoes them."""
        stamp = self._stamp()
        synced = [r for r in batch.results if r.state == SYNCED]
        with self._transaction() as con:
            new = {r.did: r.since_us for r in synced if r.since_us is not None}
            if new:
                self._insert_accounts(con, new, stamp, sync=False)
            statuses = sync_statuses(batch)
            if statuses:
                self._apply_accounts(con, statuses, stamp)
            staged = batch.tracks if batch.tracks is not None else TRACK_SCHEMA.empty_table()
            with (
                _registered(con, "staged", staged),
                _registered(con, "synced", sync_sql.synced_table(batch.results)),
                _registered(con, "sync_results", sync_sql.results_table(batch.results)),
            ):
                pending = self._upsert_staged(con, stamp) if batch.tracks is not None else []
                if synced:
                    con.execute(sync_sql.duck(sync_sql.GONE), [stamp])
                con.execute(sync_sql.duck(sync_sql.SAVE_RESULTS), [stamp])
            if batch.rejections:
                _insert_rejections(con, batch.rejections, stamp)
        self.generation += 1
        return pending

    @_guarded
    def request_syncs(self, dids: list[str] | None, reason: str) -> int:
        stamp = self._stamp()
        with self._transaction() as con:
            if dids is None:
                return self._request_all(con, reason, stamp)
            with _registered(con, "asked", sync_sql.dids_table(dids)):
                con.execute(sync_sql.duck(sync_sql.REQUEST_DIDS), [reason, stamp])
        return len(set(dids))

    def _request_all(self, con: Con, reason: str, stamp: int) -> int:
        """Every account the index knows syncs again, and every relay is listed again from its first page."""
        con.execute(sync_sql.duck(sync_sql.ADD_KNOWN), [reason, stamp])
        con.execute(sync_sql.duck(sync_sql.REQUEST_ALL), [reason, stamp])
        con.execute(sync_sql.duck(sync_sql.RESTART_DISCOVERY), [stamp])
        row = con.execute("SELECT count(*) FROM account_syncs WHERE requested_us = ?", [stamp]).fetchone()
        return int(row[0]) if row else 0

    @_guarded
    def record_discovery(self, page: DiscoveryPage) -> None:
        stamp = self._stamp()
        with self._transaction() as con:
            with _registered(con, "listed", sync_sql.dids_table(page.dids)):
                con.execute(sync_sql.duck(sync_sql.DISCOVERED), [sync_sql.listed_reason(page.relay), stamp])
            con.execute(sync_sql.duck(sync_sql.DISCOVERY_PAGE), sync_sql.discovery_row(page, stamp))

    @_guarded
    def record_audio(self, results: Iterable[AudioResult]) -> None:
        results = list(results)
        if not results:
            return
        stamp = self._stamp()
        table = pa.table(
            {
                "url": [r.url for r in results],
                "state": [str(r.state) for r in results],
                "reason": [r.reason for r in results],
                "status": pa.array([r.status for r in results], pa.int32()),
                "content_type": pa.array([r.content_type for r in results], pa.string()),
                "checked_us": [stamp] * len(results),
            }
        )
        with self._transaction() as con, _registered(con, "results", table):
            con.execute("INSERT OR REPLACE INTO audio_checks SELECT * FROM results")
            con.execute(
                "UPDATE tracks SET audio_state = r.state, changed_us = ? FROM results r "
                "WHERE tracks.audio_url = r.url AND NOT tracks.deleted AND tracks.audio_state <> r.state",
                [stamp],
            )
        self.generation += 1

    @_guarded
    def set_handles(self, handles: Mapping[str, str | None]) -> None:
        stamp = self._stamp()
        table = pa.table({"did": list(handles), "handle": pa.array(list(handles.values()), pa.string())})
        with self._transaction() as con, _registered(con, "handles", table):
            con.execute(
                "UPDATE accounts SET handle = h.handle, handle_resolved_us = ? FROM handles h "
                "WHERE accounts.did = h.did",
                [stamp],
            )
        self.generation += 1

    @_guarded
    def account_bytes(self, did: str) -> int:
        row = self.reader().execute(
            "SELECT coalesce(sum(u.size), 0) FROM uploads u WHERE u.did = ? AND EXISTS ("
            " SELECT 1 FROM tracks t WHERE t.did = u.did AND NOT t.deleted AND ends_with(t.audio_url, '/' || u.key))",
            [did],
        ).fetchone()
        return int(row[0]) if row else 0

    @_guarded
    def record_upload(self, did: str, key: str, size: int) -> None:
        with self._transaction() as con:
            con.execute("INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?)", [did, key, size, now_us()])

    @_guarded
    def rewind(self, time_us: int, source: str | None) -> None:
        with self._transaction() as con:
            con.execute("INSERT OR REPLACE INTO cursor VALUES (1, ?, ?, ?)", [time_us, source, now_us()])

    @_guarded
    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as con:
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    @_guarded
    def keep_meta(self, key: str, value: str, replace: str | None) -> str:
        with self._transaction() as con:
            row = con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
            if row is not None and row[0] != replace:
                return str(row[0])
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])
        return value

    @_guarded
    def save_oauth_session(self, key: str, did: str, sealed: bytes) -> None:
        now = now_us()
        with self._transaction() as con:
            con.execute(
                "INSERT INTO oauth_sessions VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "did = excluded.did, sealed = excluded.sealed, updated_us = excluded.updated_us",
                [key, did, sealed, now, now],
            )

    @_guarded
    def delete_oauth_session(self, key: str) -> None:
        with self._transaction() as con:
            con.execute("DELETE FROM oauth_sessions WHERE id = ?", [key])

    @_guarded
    def save_oauth_request(self, key: str, sealed: bytes, expires_us: int) -> None:
        with self._transaction() as con:
            con.execute("INSERT OR REPLACE INTO oauth_requests VALUES (?, ?, ?)", [key, sealed, expires_us])

    @_guarded
    def take_oauth_request(self, key: str, now_us: int) -> bytes | None:
        with self._transaction() as con:
            row = con.execute(
                "DELETE FROM oauth_requests WHERE id = ? RETURNING sealed, expires_us", [key]
            ).fetchone()
        if row is None or row[1] <= now_us:
            return None
        return bytes(row[0])

    @_guarded
    def purge_oauth(self, now_us: int, idle_before_us: int) -> None:
        with self._transaction() as con:
            con.execute("DELETE FROM oauth_requests WHERE expires_us <= ?", [now_us])
            con.execute("DELETE FROM oauth_sessions WHERE updated_us < ?", [idle_before_us])

    # -- plumbing ----------------------------------------------------------------------------------

    def _stamp(self) -> int:
        """The time a write stamps its rows with: rising from commit to commit even if the clock steps
        back, so the API can catch up on exactly the rows stamped after the last one it saw."""
        self._last_stamp = max(now_us(), self._last_stamp + 1)
        return self._last_stamp

    @contextmanager
    def _transaction(self) -> Iterator[Con]:
        con = self._con
        con.execute("BEGIN")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _check_schema(self) -> None:
        tables = {name for (name,) in self._con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "schema_migrations" not in tables:
            raise StoreUnavailable(f"{self.path} is not a relay index")
        row = self._con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        if row is None or row[0] < len(MIGRATIONS):
            raise StoreUnavailable(f"{self.path} is from an older version: `relay-appview serve` upgrades it")

    def _migrate(self) -> None:
        con = self._con
        con.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_us BIGINT)")
        done = {v for (v,) in con.execute("SELECT version FROM schema_migrations").fetchall()}
        for version, sql in enumerate(MIGRATIONS, start=1):
            if version in done:
                continue
            with self._transaction():
                con.execute(sql)
                con.execute("INSERT INTO schema_migrations VALUES (?, ?)", [version, now_us()])
            log.info("migrated version=%d db=%s", version, self.path)


class _Snapshot:
    def __init__(self, con: Con) -> None:
        self._con = con

    @_guarded
    def stamps(self) -> tuple[int, int]:
        row = self._con.execute(
            f"SELECT (SELECT coalesce(max(changed_us), 0) FROM tracks), "
            f"(SELECT coalesce(max({_ACCOUNT_STAMP}), 0) FROM accounts)"
        ).fetchone()
        assert row is not None
        return row[0], row[1]

    @_guarded
    def accounts(self, since: int | None) -> list[AccountRow]:
        columns = f"did, handle, coalesce(handle_resolved_us, 0), {_ACCOUNT_STAMP}"
        if since is None:
            rows = self._con.execute(f"SELECT {columns} FROM accounts").fetchall()
        else:
            rows = self._con.execute(f"SELECT {columns} FROM accounts WHERE {_ACCOUNT_STAMP} > ?", [since]).fetchall()
        return [AccountRow(*row) for row in rows]

    def tracks(self, since: int | None) -> Iterator[list[TrackRow]]:
        with _translated():
            if since is None:
                result = self._con.execute(f"SELECT {_TRACK_COLUMNS} FROM tracks WHERE {VISIBLE}")
            else:
                result = self._con.execute(f"SELECT {_TRACK_COLUMNS} FROM tracks WHERE changed_us > ?", [since])
            while chunk := result.fetchmany(_CATALOG_BATCH):
                yield [TrackRow(*row) for row in chunk]


def _insert_rejections(con: Con, rejections: list[Rejection], stamp: int) -> None:
    """As one Arrow table: DuckDB's executemany runs a statement a row, and a stream of invalid records
    (anyone can send them) would otherwise cost the writer milliseconds each."""
    with _registered(con, "rejected", _rows(rejections, "uri", "rev", "reason", "time_us")):
        con.execute("INSERT OR IGNORE INTO rejections SELECT uri, rev, reason, time_us, ? FROM rejected", [stamp])


def _rows(items: Sequence[object], *fields: str) -> pa.Table:
    """Dataclass rows as a table of the named fields (text columns typed even when every value is None)."""
    columns = {name: [getattr(item, name) for item in items] for name in fields}
    return pa.table(
        {
            name: pa.array(values, pa.string()) if all(v is None or isinstance(v, str) for v in values) else values
            for name, values in columns.items()
        }
    )


@contextmanager
def _registered(con: Con, name: str, table: pa.Table) -> Iterator[None]:
    con.register(name, table)
    try:
        yield
    finally:
        con.unregister(name)


def _scalar(con: Con, sql: str) -> Any:
    row = con.execute(sql).fetchone()
    return row[0] if row else None


_UPSERT_TRACKS = f"""
INSERT INTO tracks (did, rkey, rev, cid, deleted, hidden, title, artist, album, audio_url, file_type, duration,
                    created_at, created_us, indexed_us, sort_us, audio_state, event_time_us, changed_us,
                    first_seen_us, proof, proof_reason, proof_after_us)
SELECT s.did, s.rkey, s.rev, s.cid, s.deleted,
       coalesce(NOT a.active, false),
       s.title, s.artist, s.album, s.audio_url, s.file_type, s.duration, s.created_at, s.created_us,
       $now, greatest(0, least(coalesce(s.created_us, s.first_seen_us), s.first_seen_us)),
       CASE WHEN s.deleted THEN '{NO_AUDIO}' ELSE coalesce(c.state, 'pending') END,
       s.event_time_us, $now, s.first_seen_us, s.proof, NULL, 0
FROM staged s
LEFT JOIN accounts a ON a.did = s.did
LEFT JOIN audio_checks c ON c.url = s.audio_url AND c.checked_us > $fresh_after
ON CONFLICT (did, rkey) DO UPDATE SET
    rev = excluded.rev, cid = excluded.cid, deleted = excluded.deleted, hidden = excluded.hidden,
    title = excluded.title, artist = excluded.artist, album = excluded.album,
    audio_url = excluded.audio_url, file_type = excluded.file_type, duration = excluded.duration,
    created_at = excluded.created_at, created_us = excluded.created_us,
    sort_us = greatest(0, least(coalesce(excluded.created_us, tracks.first_seen_us), tracks.first_seen_us)),
    audio_state = CASE
        WHEN excluded.audio_url IS NOT DISTINCT FROM tracks.audio_url AND tracks.audio_state <> '{NO_AUDIO}'
        THEN tracks.audio_state ELSE excluded.audio_state END,
    event_time_us = excluded.event_time_us, changed_us = excluded.changed_us,
    proof = excluded.proof, proof_reason = NULL, proof_after_us = 0
WHERE excluded.rev > tracks.rev
"""

# A claim its PDS proved false: its rev is forgotten (the empty string sorts before every TID), so what
# the PDS proved applies in its place; only the row as it was claimed, not a newer event's.
_OVERRULE = """
UPDATE tracks SET rev = '' FROM claims c
WHERE tracks.did = c.did AND tracks.rkey = c.rkey AND tracks.rev = c.rev AND tracks.proof = 'pending'
"""
_MARK_PROOFS = """
UPDATE tracks SET proof = m.proof, proof_reason = m.reason, changed_us = ? FROM marks m
WHERE tracks.did = m.did AND tracks.rkey = m.rkey AND tracks.rev = m.rev AND tracks.proof = 'pending'
"""
_DELAY_PROOFS = """
UPDATE tracks SET proof_reason = d.reason, proof_after_us = d.after_us FROM delays d
WHERE tracks.did = d.did AND tracks.rkey = d.rkey AND tracks.rev = d.rev AND tracks.proof = 'pending'
"""

# A deletion purges the tracks the account has when it happens (tombstones stay, so nothing older comes
# back); one older than what the store holds for the account changes nothing.
_PURGE = f"""
UPDATE tracks SET deleted = true, cid = NULL, title = NULL, artist = NULL, album = NULL, audio_url = NULL,
    file_type = NULL, duration = NULL, created_at = NULL, audio_state = '{NO_AUDIO}', changed_us = $stamp
WHERE NOT deleted AND did IN (
    SELECT c.did FROM changed c JOIN accounts a ON a.did = c.did
    WHERE c.purge_at_us IS NOT NULL
      AND (a.status_at_us < c.purge_at_us OR (a.status_at_us = c.purge_at_us AND a.seq < c.purge_seq)))
"""
