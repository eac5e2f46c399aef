"""The Jetstream side of the indexer, in a process of its own.

The feed process receives, decodes, parses, validates, plans and stages batches; the indexing process
only writes them. In one process the two share a GIL, and DuckDB's Python client takes the GIL back
between the steps of every statement (duckdb/duckdb#3749), so each write queued behind the receive
loop: an upsert took 2.4 times as long beside it as alone. Apart, each runs on its own core.

The cursor still moves only when a batch is committed: the parent acknowledges every batch after its
transaction, and the feed's consumer resumes from the newest acknowledged one. When the parent cannot
commit a batch it refuses it and every later batch of the same Jetstream connection (a batch carries the
number of its connection), so nothing past a failed batch is stored; the consumer reconnects from its
cursor, and the planner starts again from the accounts in the parent's store. The feed exits when told
to stop or when the parent goes away (kill -9 included), and ignores SIGINT and SIGTERM: the parent owns
its life, so that a Ctrl-C still drains the batch in hand.

The two ends talk over a socket pair in length-prefixed pickles; both are this code, of one version.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import pickle
import signal
import socket
import struct
from collections import Counter, deque
from collections.abc import Awaitable
from dataclasses import dataclass

import uvloop

from indexer import metrics
from indexer.config import Settings
from indexer.db.batch import Batch
from indexer.ingest.consumer import Consumer
from indexer.ingest.events import Event
from indexer.ingest.planner import Planner
from indexer.runtime import configure_logging, tune_for_ingest

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!I")
START_TIMEOUT_SECONDS = 60.0


@dataclass(slots=True)
class Start:
    settings: Settings
    cursor: int | None
    rewind_first: bool
    known: dict[str, int]  # indexed accounts, with the stream time each was first seen at
    max_future_us: int


# child → parent
@dataclass(slots=True)
class Shipped:
    batch: Batch
    events: int
    source: str
    connection: int  # the consumer's connection number: a refusal covers the rest of its connection
    counters: metrics.CounterValues


@dataclass(slots=True)
class Status:
    connected_to: str | None
    counters: metrics.CounterValues


# parent → child
@dataclass(slots=True)
class Ack:
    """For a batch that failed to commit, `known` is the accounts the store holds, to replan from."""

    committed: bool
    known: dict[str, int] | None = None


@dataclass(slots=True)
class Known:
    dids: dict[str, int]


@dataclass(slots=True)
class Stop:
    pass


class FeedGone(Exception):
    """The other end of the feed's socket closed."""


def _send(writer: asyncio.StreamWriter, message: object) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(_HEADER.pack(len(body)) + body)


async def _receive(reader: asyncio.StreamReader) -> object:
    try:
        (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
        return pickle.loads(await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise FeedGone(str(exc)) from None


# -- the parent's end ------------------------------------------------------------------------------


class Feed:
    """Starts a feed process and yields its batches; each must be answered with `ack`, in order."""

    def __init__(self, start: Start) -> None:
        self._start = start
        self._process: multiprocessing.process.BaseProcess | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._mirror = metrics.CounterMirror()
        self.connected_to: str | None = None

    async def __aenter__(self) -> Feed:
        ours, theirs = socket.socketpair()
        process = multiprocessing.get_context("spawn").Process(
            target=_child_main, args=(theirs, self._start), name="relay-feed", daemon=True
        )
        await asyncio.to_thread(process.start)
        self._process = process
        theirs.close()
        self._reader, self._writer = await asyncio.open_connection(sock=ours)
        try:
            status = await asyncio.wait_for(_receive(self._reader), START_TIMEOUT_SECONDS)
        except BaseException:
            await self._finish()
            raise
        if not isinstance(status, Status):
            await self._finish()
            raise FeedGone(f"feed process said {type(status).__name__} before it was ready")
        log.info("feed process started pid=%s", process.pid)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._finish()

    def __aiter__(self) -> Feed:
        return self

    async def __anext__(self) -> Shipped:
        """The next batch; the iteration ends when the feed process exits, for whatever reason."""
        assert self._reader is not None
        while True:
            try:
                message = await _receive(self._reader)
            except FeedGone:
                self.connected_to = None
                raise StopAsyncIteration from None
            if isinstance(message, Shipped):
                self._mirror.update(message.counters)
                return message
            if isinstance(message, Status):
                self.connected_to = message.connected_to
                self._mirror.update(message.counters)

    def ack(self, ack: Ack) -> None:
        self._tell(ack)

    def add_known(self, dids: dict[str, int]) -> None:
        """Accounts indexed outside the feed (publishing), whose account events it must now follow."""
        self._tell(Known(dids))

    def stop(self) -> None:
        """Ask the feed to ship what it holds and exit; its batches still arrive until it has."""
        self._tell(Stop())

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def exitcode(self) -> int | None:
        return self._process.exitcode if self._process is not None else None

    def _tell(self, message: object) -> None:
        if self._writer is not None and not self._writer.is_closing():
            _send(self._writer, message)

    async def _finish(self) -> None:
        """Wait for the feed to exit (it does once stopped, or once its socket closes); kill it if not."""
        if self._writer is not None:
            self._writer.close()
        process = self._process
        if process is None:
            return
        await asyncio.to_thread(process.join, 10.0)
        if process.exitcode is None:
            log.warning("feed process did not exit; killing it pid=%s", process.pid)
            process.kill()
            await asyncio.to_thread(process.join)


# -- the feed process ------------------------------------------------------------------------------


def _child_main(sock: socket.socket, start: Start) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(start.settings.log_level)
    tune_for_ingest()
    uvloop.run(_FeedProcess(start).run(sock))


class _FeedProcess:
    def __init__(self, start: Start) -> None:
        self._max_future_us = start.max_future_us
        self._verify = start.settings.proofs.verify_records
        self._planner = Planner(start.known, start.max_future_us, verify=self._verify)
        # Two batches in flight: the consumer keeps receiving while the parent commits the older one.
        self._consumer = Consumer(
            start.settings.ingest, self._emit, start.cursor, rewind_first=start.rewind_first, max_in_flight=2
        )
        self._acks: deque[asyncio.Future[Ack]] = deque()
        self._refused_connection = -1
        self._gone = False
        self._writer: asyncio.StreamWriter | None = None

    async def run(self, sock: socket.socket) -> None:
        reader, self._writer = await asyncio.open_connection(sock=sock)
        self._report()  # ready
        control = asyncio.create_task(self._control(reader))
        reporter = asyncio.create_task(self._report_changes())
        try:
            await self._consumer.run()
        finally:
            reporter.cancel()
            if not self._gone:
                self._report()
                await self._writer.drain()
            control.cancel()
            self._writer.close()

    def _emit(self, events: list[Event], source: str) -> Awaitable[None]:
        """Plan and ship now; the returned awaitable ends when the parent has committed the batch."""
        if self._gone:
            raise FeedGone("the indexing process is gone")
        connection = self._consumer.connections
        if connection <= self._refused_connection:
            raise BatchRefused("an earlier batch of this connection was not committed")
        for kind, n in Counter(map(type, events)).items():
            metrics.EVENTS_RECEIVED.labels(kind=kind.__name__.lower()).inc(n)
        batch = self._planner.plan(events)
        batch.gap = self._consumer.take_gap()
        acked: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._acks.append(acked)
        assert self._writer is not None
        _send(self._writer, Shipped(batch, len(events), source, connection, metrics.feed_counter_values()))
        return self._committed(acked, connection)

    async def _committed(self, acked: asyncio.Future[Ack], connection: int) -> None:
        assert self._writer is not None
        await self._writer.drain()
        ack = await acked
        if not ack.committed:
            self._refused_connection = max(self._refused_connection, connection)
            if ack.known is not None:
                self._planner = Planner(ack.known, self._max_future_us, verify=self._verify)
            raise BatchRefused("the indexing process did not commit the batch")

    async def _control(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                message = await _receive(reader)
                if isinstance(message, Ack):
                    acked = self._acks.popleft()
                    if not acked.done():  # not cancelled along with a failed batch
                        acked.set_result(message)
                elif isinstance(message, Known):
                    self._planner.known.update(message.dids)
                elif isinstance(message, Stop):
                    self._consumer.stop()
        except FeedGone:
            # Nothing received from now on can be committed: stop, and fail what waits for an answer.
            self._gone = True
            self._consumer.stop()
            while self._acks:
                acked = self._acks.popleft()
                if not acked.done():
                    acked.set_exception(FeedGone("the indexing process is gone"))
                    acked.exception()  # retrieved: a batch given up before it was awaited is no error

    async def _report_changes(self) -> None:
        last = None
        while True:
            await asyncio.sleep(0.2)
            state = (self._consumer.connected_to, metrics.feed_counter_values())
            if state != last:
                self._report()
                last = state

    def _report(self) -> None:
        if not self._gone and self._writer is not None:
            _send(self._writer, Status(self._consumer.connected_to, metrics.feed_counter_values()))


class BatchRefused(Exception):
    """The indexing process could not commit a batch; the consumer fetches it again from its cursor."""
