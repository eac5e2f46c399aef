"""Signals from the other processes on one database: LISTEN on a connection of its own, in a thread.

A writer signals in the transaction it commits (`pg_notify`, delivered only if it commits), so a signal
means "there are rows stamped after what you have seen". Signals sent while this connection was down are
lost, so every (re)connect counts as a signal too: a replica that was cut off catches up by the stamps it
already keeps, whatever it missed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

from indexer.db.pg_connect import Connection, connect, first_line, redacted
from indexer.errors import StoreError

log = logging.getLogger(__name__)

CHANNEL = "relay_changes"
_WAKE_SECONDS = 0.5  # how often the thread looks up to see whether it should stop
_BACKOFF_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0)


class Listener:
    def __init__(self, url: str, signalled: Callable[[int | None], None]) -> None:
        """`signalled(pid)`: another backend committed (None: reconnected, anything may have changed)."""
        self._url = url
        self._signalled = signalled
        self._stopping = threading.Event()
        self._first = threading.Event()  # the first attempt to listen has finished, one way or the other
        self._thread = threading.Thread(target=self._run, name="relay-listen", daemon=True)

    def start(self) -> None:
        """Start listening; returns once the first attempt is over, so a snapshot taken after this call
        misses no commit (one made before LISTEN is in the snapshot; one after it is signalled)."""
        self._thread.start()
        self._first.wait(timeout=10)

    def close(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                con = connect(self._url)
            except StoreError as exc:
                self._first.set()
                if failures == 0:
                    log.warning("cannot listen for changes; retrying reason=%s", exc.reason)
                self._stopping.wait(_BACKOFF_SECONDS[min(failures, len(_BACKOFF_SECONDS) - 1)])
                failures += 1
                continue
            try:
                self._listen(con)
            except psycopg.Error as exc:
                if not self._stopping.is_set():
                    log.warning("lost the change signals; reconnecting db=%s reason=%s", redacted(self._url),
                                first_line(exc))
            finally:
                con.close()
            failures = 0

    def _listen(self, con: Connection) -> None:
        con.execute(f"LISTEN {CHANNEL}")
        self._signalled(None)
        self._first.set()
        while not self._stopping.is_set():
            for note in con.notifies(timeout=_WAKE_SECONDS):
                self._signalled(note.pid)
