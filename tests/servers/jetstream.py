"""A real Jetstream v1 server on 127.0.0.1 for tests and the ingest benchmark.

It speaks /subscribe with v1's query parameters (wantedCollections, wantedDids, an inclusive `cursor`
in unix micros, compress=true with the v1 zstd dictionary) over a real websockets server, and can be
scripted, connection by connection, to misbehave the way public hosts do: drop the TCP connection with
no close frame, stall, go quiet, inject garbage frames, close with a code, or refuse the handshake.

Speed: every event is serialized once and its websocket frame built once (server frames are unmasked,
so the bytes on the wire are the same for every subscriber); a subscriber's frames are written to the
transport in batches with websockets' own flow control. websockets' per-message `send` topped out near
130k msgs/s here, which is too close to what the benchmark has to measure on the other side.
"""

from __future__ import annotations

import asyncio
import re
import struct
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit

import orjson
import zstandard
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from tests.servers.events import shared_dir

PATH = "/subscribe"
MAX_COLLECTIONS = 100
MAX_DIDS = 10_000
_NSID_PART = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_NSID_RE = re.compile(rf"^{_NSID_PART}(?:\.{_NSID_PART}){{2,}}$")
_PREFIX_RE = re.compile(rf"^{_NSID_PART}(?:\.{_NSID_PART})*\.\*$")
_BATCH_BYTES = 64 * 1024
_OP_TEXT, _OP_BINARY = 0x1, 0x2

Action = Literal["drop", "stall", "quiet", "close"]


def encode_frame(payload: bytes, opcode: int) -> bytes:
    """One unfragmented, unmasked (server-to-client) RFC 6455 frame."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return header + payload


@dataclass(frozen=True)
class Plan:
    """How one connection misbehaves. `garbage` frames go out after `at` events; then, after `after`
    events, `action` ends the normal stream (None: behave normally)."""

    action: Action | None = None
    after: int = 0
    close_code: int = 1000
    close_reason: str = ""
    garbage: tuple[str | bytes, ...] = ()
    at: int = 0
    refuse: int | None = None


@dataclass(frozen=True)
class Subscription:
    collections: frozenset[str]
    prefixes: tuple[str, ...]
    dids: frozenset[str]
    cursor: int | None
    compress: bool
    max_message_bytes: int = 0  # maxMessageSizeBytes: larger events are left out (lossy); 0 is no limit

    def wants(self, entry: Entry) -> bool:
        if self.dids and entry.did not in self.dids:
            return False
        if entry.collection is None or not (self.collections or self.prefixes):
            return True  # identity and account events ignore wantedCollections, as on v1 hosts
        return entry.collection in self.collections or entry.collection.startswith(self.prefixes)


def parse_subscription(query: dict[str, list[str]]) -> Subscription:
    """Reads v1 query parameters; raises ValueError with the message a 400 carries."""
    wanted = query.get("wantedCollections", [])
    if len(wanted) > MAX_COLLECTIONS:
        raise ValueError(f"too many wantedCollections: {len(wanted)} > {MAX_COLLECTIONS}")
    for value in wanted:
        if not (_NSID_RE.match(value) or _PREFIX_RE.match(value)):
            raise ValueError(f"invalid collection: {value}")
    dids = query.get("wantedDids", [])
    if len(dids) > MAX_DIDS:
        raise ValueError(f"too many wantedDids: {len(dids)} > {MAX_DIDS}")
    for value in dids:
        if not value.startswith("did:"):
            raise ValueError(f"invalid did: {value}")
    cursor = None
    if query.get("cursor"):
        try:
            cursor = int(query["cursor"][0])
        except ValueError:
            raise ValueError(f"invalid cursor: {query['cursor'][0]}") from None
    max_size = 0
    if query.get("maxMessageSizeBytes"):
        try:
            max_size = max(int(query["maxMessageSizeBytes"][0]), 0)  # negative counts as no limit, as on v1
        except ValueError:
            raise ValueError(f"invalid maxMessageSizeBytes: {query['maxMessageSizeBytes'][0]}") from None
    return Subscription(
        max_message_bytes=max_size,
        collections=frozenset(value for value in wanted if not value.endswith(".*")),
        prefixes=tuple(value[:-1] for value in wanted if value.endswith(".*")),
        dids=frozenset(dids),
        cursor=cursor,
        compress=query.get("compress", [""])[0] == "true",
    )


@dataclass(slots=True)
class Entry:
    time_us: int
    did: str
    collection: str | None
    text_frame: bytes
    binary_frame: bytes | None = None  # compressed lazily: most tests never ask for it


@dataclass
class ConnectionLog:
    """One /subscribe handshake as the server saw it; `sent` counts events written so far."""

    query: dict[str, list[str]]
    status: int
    plan: Plan = field(default_factory=Plan)
    sent: int = 0

    @property
    def cursor(self) -> int | None:
        values = self.query.get("cursor")
        return int(values[0]) if values else None


@dataclass(eq=False)
class _Stream:
    log: ConnectionLog
    subscription: Subscription
    position: int  # next log index to look at
    replay_end: int  # entries before this index existed at handshake: only they are cursor-filtered
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class JetstreamServer:
    def __init__(
        self,
        events: Iterable[dict[str, Any]] = (),
        *,
        ping_interval: float | None = None,
        honours_max_message_size: bool = True,
        retention_seconds: float | None = None,
    ) -> None:
        """`honours_max_message_size=False` plays a host that sends events over a subscriber's
        maxMessageSizeBytes anyway. `retention_seconds` is the host's window, as the public hosts keep about
        a day: events older than that (by wall clock) are gone, and a cursor older than the window silently
        starts at the oldest event still held, as v1 does (`forget_before` drops events by time too)."""
        self.ping_interval = ping_interval
        self.retention_seconds = retention_seconds
        self.retained_from: int | None = None
        self.honours_max_message_size = honours_max_message_size
        self.connections: list[ConnectionLog] = []
        self._log: list[Entry] = []
        self._plans: deque[Plan] = deque()
        self._handshakes: dict[ServerConnection, _Stream] = {}
        self._streams: set[_Stream] = set()
        self._stalled: set[ServerConnection] = set()
        self._compressor: zstandard.ZstdCompressor | None = None
        self._server: Server | None = None
        self.port = 0
        self.append(events)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{PATH}"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listens on an ephemeral port the first time and on the same port after a stop(), so a test
        can take the host down and bring it back under the URL a client already holds."""
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            self.port,
            process_request=self._process_request,
            compression=None,
            ping_interval=self.ping_interval,
            close_timeout=1,
            max_size=2**20,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        for ws in self._stalled:
            ws.transport.abort()  # a paused reader would never finish the closing handshake
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    def append(self, events: dict[str, Any] | Iterable[dict[str, Any]]) -> None:
        """Adds events to the log (in delivery order) and wakes the live subscribers."""
        for event in [events] if isinstance(events, dict) else events:
            body = event.get("commit") if event.get("kind") == "commit" else None
            collection = body.get("collection") if isinstance(body, dict) else None
            payload = orjson.dumps(event)
            self._log.append(Entry(event["time_us"], event["did"], collection, encode_frame(payload, _OP_TEXT)))
        for stream in self._streams:
            stream.wake.set()

    def forget_before(self, time_us: int) -> None:
        """The host no longer holds events older than `time_us` (its window moved past them)."""
        self.retained_from = time_us

    def _oldest_held(self) -> int | None:
        oldest = self.retained_from
        if self.retention_seconds is not None:
            window = time.time_ns() // 1000 - int(self.retention_seconds * 1_000_000)
            oldest = window if oldest is None else max(oldest, window)
        return oldest

    def plan(
        self,
        *,
        drop_after: int | None = None,
        stall_after: int | None = None,
        quiet_after: int | None = None,
        close_after: int | None = None,
        close_code: int = 1000,
        close_reason: str = "",
        garbage: Sequence[str | bytes] = (),
        at: int = 0,
        refuse: int | None = None,
    ) -> Plan:
        """Scripts the next unplanned connection. Queued plans are used one per handshake, in order.

        drop_after: close TCP after N events with no close frame. stall_after: after N events send nothing
        and stop reading, so pings go unanswered. quiet_after: after N events send nothing but stay
        responsive. close_after: close cleanly with close_code. garbage: raw frames (str: text, bytes:
        binary) sent after `at` events. refuse: answer the handshake with this HTTP status.
        """
        actions = {"drop": drop_after, "stall": stall_after, "quiet": quiet_after, "close": close_after}
        chosen = [(name, after) for name, after in actions.items() if after is not None]
        if len(chosen) > 1:
            raise ValueError(f"one ending per connection, got {[name for name, _ in chosen]}")
        action, after = chosen[0] if chosen else (None, 0)
        plan = Plan(action, after, close_code, close_reason, tuple(garbage), at, refuse)
        self._plans.append(plan)
        return plan

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path != PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        query = parse_qs(parts.query, keep_blank_values=True)
        try:
            subscription = parse_subscription(query)
        except ValueError as exc:
            self.connections.append(ConnectionLog(query, HTTPStatus.BAD_REQUEST))
            return connection.respond(HTTPStatus.BAD_REQUEST, f"{exc}\n")
        plan = self._plans.popleft() if self._plans else Plan()
        if plan.refuse is not None:
            self.connections.append(ConnectionLog(query, plan.refuse, plan))
            return connection.respond(HTTPStatus(plan.refuse), "refused by plan\n")
        log = ConnectionLog(query, HTTPStatus.SWITCHING_PROTOCOLS, plan)
        self.connections.append(log)
        end = len(self._log)
        self._handshakes[connection] = _Stream(log, subscription, 0 if subscription.cursor is not None else end, end)
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        stream = self._handshakes.pop(ws)
        self._streams.add(stream)
        watcher = asyncio.create_task(self._wake_on_close(ws, stream.wake))
        try:
            await self._pump(ws, stream)
        except (ConnectionClosed, OSError):
            pass  # the subscriber went away: nothing to tell anyone
        finally:
            watcher.cancel()
            self._streams.discard(stream)
            self._stalled.discard(ws)

    async def _pump(self, ws: ServerConnection, stream: _Stream) -> None:
        plan, log = stream.log.plan, stream.log
        batch: list[bytes] = []
        size = 0
        garbage_due = bool(plan.garbage)
        while ws.state is State.OPEN:
            if garbage_due and log.sent == plan.at:
                batch.extend(_garbage_frame(frame) for frame in plan.garbage)
                garbage_due = False
            if plan.action is not None and log.sent == plan.after:
                await self._flush(ws, batch)
                await self._end(ws, stream)
                return
            entry = self._next(stream)
            if entry is None:
                await self._flush(ws, batch)
                size = 0
                await stream.wake.wait()
                stream.wake.clear()
                continue
            frame = self._frame(entry, stream.subscription.compress)
            batch.append(frame)
            size += len(frame)
            log.sent += 1
            if size >= _BATCH_BYTES:
                await self._flush(ws, batch)
                size = 0

    def _next(self, stream: _Stream) -> Entry | None:
        cursor = stream.subscription.cursor
        oldest = self._oldest_held()
        while stream.position < len(self._log):
            index = stream.position
            entry = self._log[index]
            stream.position += 1
            if cursor is not None and index < stream.replay_end and entry.time_us < cursor:
                continue
            if oldest is not None and index < stream.replay_end and entry.time_us < oldest:
                continue  # out of the window: gone, whatever the cursor asked for
            limit = stream.subscription.max_message_bytes
            if limit and self.honours_max_message_size and _payload_size(entry.text_frame) > limit:
                continue
            if stream.subscription.wants(entry):
                return entry
        return None

    def _frame(self, entry: Entry, compress: bool) -> bytes:
        if not compress:
            return entry.text_frame
        if entry.binary_frame is None:
            payload = entry.text_frame[-_payload_size(entry.text_frame) :]
            entry.binary_frame = encode_frame(self._zstd().compress(payload), _OP_BINARY)
        return entry.binary_frame

    def _zstd(self) -> zstandard.ZstdCompressor:
        if self._compressor is None:
            dictionary = zstandard.ZstdCompressionDict((shared_dir() / "zstd_dictionary_v1").read_bytes())
            self._compressor = zstandard.ZstdCompressor(dict_data=dictionary)
        return self._compressor

    @staticmethod
    async def _flush(ws: ServerConnection, batch: list[bytes]) -> None:
        """Writes whole frames straight to the transport; websockets' own frames (pongs, close) can only
        land between them, never inside one, because each write is a single synchronous call."""
        if not batch:
            return
        if ws.state is not State.OPEN:
            raise ConnectionClosed(None, None)
        ws.transport.write(b"".join(batch))
        batch.clear()
        await ws.drain()

    async def _end(self, ws: ServerConnection, stream: _Stream) -> None:
        plan = stream.log.plan
        if plan.action == "drop":
            ws.transport.close()  # flushes what was written, then FIN: no close frame
            await ws.wait_closed()
        elif plan.action == "close":
            await ws.close(plan.close_code, plan.close_reason)
        else:
            if plan.action == "stall":
                self._stalled.add(ws)
                ws.transport.pause_reading()  # unread pings get no pong
                if ws.keepalive_task is not None:
                    ws.keepalive_task.cancel()
            await ws.wait_closed()

    @staticmethod
    async def _wake_on_close(ws: ServerConnection, wake: asyncio.Event) -> None:
        await ws.wait_closed()
        wake.set()


def _payload_size(frame: bytes) -> int:
    size = frame[1] & 0x7F
    if size == 126:
        return struct.unpack_from("!H", frame, 2)[0]
    if size == 127:
        return struct.unpack_from("!Q", frame, 2)[0]
    return size


def _garbage_frame(frame: str | bytes) -> bytes:
    if isinstance(frame, str):
        return encode_frame(frame.encode(), _OP_TEXT)
    return encode_frame(frame, _OP_BINARY)
