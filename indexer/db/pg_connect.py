"""PostgreSQL connections: opening one, a small pool for reads, and the driver's errors as the store's.

The pool is ours, not psycopg_pool's, for how it behaves while the server is away: a read fails at once
(a 503 from the API, never a wait for a pool timeout) and the next read after the server is back connects
at once (psycopg_pool backs off its reconnects, 1 s doubling). A connection that sat idle for a second or
more is checked with an empty query before it is used, so a server restart between two uses costs no
request an error (a busy connection is used as is).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg

from indexer.errors import StoreError, StoreUnavailable

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]  # rows as plain tuples

CONNECT_TIMEOUT_SECONDS = 5
IDLE_CHECK_SECONDS = 1.0
# A server that stops answering (a cut network, not a closed socket) is given up on after ~25 s, on both
# ends: the client's keepalives, and the server's for this session, so the writer lock of an indexer that
# vanished this way is freed for its standby (the server's default waits two hours).
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
_SERVER_KEEPALIVES = (
    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3; "
    "SET tcp_user_timeout = 25000"
)


def redacted(url: str) -> str:
    """The URL without its password, fit for a log line or an error."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "(a malformed URL)"
    return urlunsplit(parts._replace(netloc=netloc))


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def connect(url: str) -> Connection:
    """An autocommit connection (transactions are explicit: `with con.transaction()`)."""
    try:
        con = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS, **_KEEPALIVES)  # type: ignore[arg-type]  # libpq parameters as keywords
        con.execute(_SERVER_KEEPALIVES)
    except psycopg.Error as exc:
        raise StoreUnavailable(f"the database at {redacted(url)} is unreachable: {first_line(exc)}") from exc
    return con


@contextmanager
def translated() -> Iterator[None]:
    """psycopg's errors as the store's: a lost or refused connection is StoreUnavailable (503)."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise StoreUnavailable(f"the database is unavailable: {first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise StoreError(f"database error: {first_line(exc)}") from exc


def guarded(method: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with translated():
            return method(*args, **kwargs)

    return wrapper


def usable(con: Connection, last_used: float) -> bool:
    """Open, and (if it sat idle) still answering."""
    if con.closed or con.broken:
        return False
    if time.monotonic() - last_used < IDLE_CHECK_SECONDS:
        return True
    try:
        con.execute("")
    except psycopg.Error:
        con.close()
        return False
    return True


class Pool:
    """Up to `size` idle connections kept for reuse; any number may be open at once (one per reading
    thread at most, in practice)."""

    def __init__(self, url: str, size: int) -> None:
        self._url = url
        self._size = size
        self._idle: list[tuple[Connection, float]] = []
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        con = self._take()
        try:
            yield con
        finally:
            self._give_back(con)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for con, _ in idle:
            con.close()

    def _take(self) -> Connection:
        while True:
            with self._lock:
                if not self._idle:
                    break
                con, last_used = self._idle.pop()
            if usable(con, last_used):
                return con
        return connect(self._url)

    def _give_back(self, con: Connection) -> None:
        if con.closed or con.broken or con.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            con.close()
            return
        with self._lock:
            if len(self._idle) < self._size:
                self._idle.append((con, time.monotonic()))
                return
        con.close()
