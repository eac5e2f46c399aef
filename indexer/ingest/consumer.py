"""The Jetstream websocket loop: connect, receive, batch, hand batches to `emit`, reconnect.

It knows nothing of the store: it is handed `emit(events, source)` and resumes from the cursor of the last
batch `emit` accepted, never from what was merely received, so a failed batch is fetched again rather than
skipped. Batches in flight (one by default) overlap the filling of the next. `websockets.connect` used as
an iterator would reuse one URL forever; this loop rebuilds the URL, with the current cursor, on every
attempt.

Reconnects back off exponentially with jitter (reset only after progress) and rotate across hosts. A
watchdog pings; a connection with neither a message nor a pong for `stall_seconds` is dead. A host that
stays alive but sends none of our commits for `quiet_seconds` is left for the next one, since a public
host once silently dropped a collection for hours.

An event over our size limit must not stall ingest. The subscription asks the host to leave such events
out (`maxMessageSizeBytes`). A host that sends one anyway: a frame between the limit and the websocket's
cap is refused like any malformed frame; a frame over the cap closes the connection (1009) before we can
see which event it was, and the same cursor would bring it back forever, so the next connection reads
with a cap 16 times higher, once, to receive that frame and refuse it. Only a frame over even that is
stepped over by cursor, which may skip an event that shares its microsecond; the log says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.frames import CloseCode

from indexer import metrics
from indexer.atproto.nsid import TRACK_COLLECTION
from indexer.config import IngestSettings
from indexer.db.batch import WindowGap
from indexer.errors import MalformedEvent
from indexer.ingest.events import Commit, Event, parse
from indexer.ingest.jetstream import MAX_EVENT_BYTES, FrameDecoder, OversizedFrame, subscribe_url

log = logging.getLogger(__name__)

Emit = Callable[[list[Event], str], Awaitable[object]]
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # the websocket's cap: a longer frame closes the connection (1009)
SKIP_MESSAGE_BYTES = 16 * MAX_MESSAGE_BYTES  # the cap of the one connection that reads past such a frame


class Consumer:
    def __init__(
        self,
        settings: IngestSettings,
        emit: Emit,
        cursor: int | None,
        *,
        rewind_first: bool = True,
        collections: tuple[str, ...] = (TRACK_COLLECTION,),
        decoder: FrameDecoder | None = None,
        rng: random.Random | None = None,
        max_in_flight: int = 1,
    ) -> None:
        """`max_in_flight` above 1 starts a batch's awaitable before the previous one has finished: only
        for an `emit` that keeps batches in order and, once one fails, refuses the rest (the feed)."""
        self.settings = settings
        self._max_in_flight = max_in_flight
        self.cursor = cursor
        self._emit = emit
        self._collections = list(collections)
        self._decoder = decoder or FrameDecoder()
        self._rng = rng or random.Random()
        self._host = 0
        self.connected_to: str | None = None
        self.connections = 0  # attempts so far: tells a batch of this connection from one of the last
        self._rewind_first = rewind_first
        self._stopping = asyncio.Event()
        self._pending: list[Event] = []
        self._inflight: deque[asyncio.Task[None]] = deque()
        self._ship_lock = asyncio.Lock()
        self._last_message = 0.0
        self._last_ours = 0.0
        self._last_pong = 0.0
        self._close_reason = "closed"
        self._last_received_us: int | None = None  # time_us of the last event of this connection
        self._received = 0  # events this connection delivered, however it ended
        self._skip_to: int | None = None  # where the next connection starts, past a frame over even the skip cap
        self._skip_step = 1
        self._next_cap = MAX_MESSAGE_BYTES  # SKIP_MESSAGE_BYTES for the one connection after a 1009
        self._stepping = False  # stepping past a frame over the skip cap, until a connection gets past it
        self._asked: int | None = None  # the cursor this connection asked for
        self.gap: WindowGap | None = None  # a connection that began past the host's window, not yet shipped

    def take_gap(self) -> WindowGap | None:
        """The window gap the events pending now follow, once (the batch that carries them stores it)."""
        gap, self.gap = self.gap, None
        return gap

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Consume until stop(); every received event is emitted (or dropped for refetch) before return."""
        failures = 0
        rewind_us = int(self.settings.rewind_seconds * 1_000_000) if self._rewind_first else 0
        while not self._stopping.is_set():
            base = self.settings.jetstream_urls[self._host]
            cursor = None if self.cursor is None else self.cursor - rewind_us
            if self._skip_to is not None:
                cursor, self._skip_to = self._skip_to, None
            url = subscribe_url(base, self._collections, cursor, self.settings.compress, MAX_EVENT_BYTES)
            self.connections += 1
            self._asked = cursor
            received, reason = await self._connect(url, base, cursor)
            if self._stopping.is_set():
                break
            metrics.RECONNECTS.labels(reason=reason).inc()
            if reason != "oversized":
                self._stepping, self._skip_step = False, 1
            switch = reason == "quiet" or (not received and reason != "oversized")
            failures = 0 if received or reason == "oversized" else failures + 1
            rewind_us = int(self.settings.rewind_seconds * 1_000_000)
            if switch and len(self.settings.jetstream_urls) > 1:
                self._host = (self._host + 1) % len(self.settings.jetstream_urls)
                rewind_us += int(self.settings.switch_rewind_seconds * 1_000_000)
            delay = self._backoff(failures)
            log.warning(
                "jetstream disconnected host=%s reason=%s received=%d next_host=%s retry_in=%.2fs",
                base, reason, received, self.settings.jetstream_urls[self._host], delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    def _backoff(self, failures: int) -> float:
        ceiling = min(self.settings.backoff_max_seconds, self.settings.backoff_min_seconds * 2 ** max(failures - 1, 0))
        return self._rng.uniform(ceiling / 2, ceiling)

    async def _connect(self, url: str, source: str, cursor: int | None) -> tuple[int, str]:
        """One connection's life; returns how many events it delivered and why it ended."""
        stall = self.settings.stall_seconds
        self._close_reason = "closed"
        self._last_received_us = None
        self._received = 0
        cap, self._next_cap = self._next_cap, MAX_MESSAGE_BYTES
        try:
            async with websockets.connect(
                url,
                open_timeout=min(10.0, stall),
                ping_interval=None,  # the watchdog pings, so that a pong counts as a sign of life
                close_timeout=min(1.0, stall / 2),  # a stop mid-replay must not wait behind the backlog
                max_size=cap,
                compression=None,
            ) as ws:
                log.info("jetstream connected url=%s", url)
                self.connected_to = source
                loop = asyncio.get_running_loop()
                self._last_message = self._last_ours = self._last_pong = loop.time()
                ended = asyncio.Event()
                watchdog = asyncio.create_task(self._watch(ws, source, ended))
                try:
                    await self._receive(ws, source)
                finally:
                    # Not cancelled: the watchdog may be handing a batch over, which must not be cut short.
                    ended.set()
                    await watchdog
        except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            self._close_reason = f"connect_failed:{type(exc).__name__}"
        except websockets.ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                self._past_oversized(cursor, cap)
        except EmitFailed:
            self._close_reason = "emit_failed"
        self.connected_to = None
        if self._close_reason != "emit_failed":
            try:
                await self._drain(source)
            except EmitFailed:
                self._close_reason = "emit_failed"
        if self._close_reason == "emit_failed":
            # Everything after a failed batch is dropped too: it is fetched again from the cursor.
            self._pending.clear()
        return self._received, self._close_reason.split(":", 1)[0]

    def _past_oversized(self, cursor: int | None, cap: int) -> None:
        """A frame over the cap closed the connection (1009): the next connection reads with the skip cap,
        once. Over even that, the next connection starts a step past the last event received (or the
        cursor, when that frame came first), the step doubling while the frame keeps coming first."""
        self._close_reason = "oversized"
        if cap == MAX_MESSAGE_BYTES and not self._stepping:
            self._next_cap = SKIP_MESSAGE_BYTES
            log.warning(
                "a frame over %d bytes closed the connection (1009); the next connection reads with a cap of "
                "%d bytes to receive it and skip it", MAX_MESSAGE_BYTES, SKIP_MESSAGE_BYTES,
            )
            return
        if not self._stepping:
            metrics.REJECTIONS.labels(reason="oversized_frame").inc()  # once a frame, however many steps
        self._stepping = True  # the frame is over even the skip cap: reading it again would only cost time
        start = self._last_received_us if self._last_received_us is not None else cursor
        if start is not None:
            self._skip_step = 1 if self._last_received_us is not None else self._skip_step * 2
            self._skip_to = start + self._skip_step
        log.warning(
            "a frame over %d bytes closed the connection (1009); stepping past it: resuming at cursor=%s, "
            "an event of the same microsecond would be skipped too", SKIP_MESSAGE_BYTES, self._skip_to,
        )

    async def _receive(self, ws: ClientConnection, source: str) -> None:
        loop = asyncio.get_running_loop()
        batch_size = self.settings.batch_size
        received = 0
        try:
            async for message in ws:
                now = loop.time()
                self._last_message = now
                try:
                    if len(message) > MAX_EVENT_BYTES:
                        raise OversizedFrame(f"frame of {len(message)} bytes, over {MAX_EVENT_BYTES}")
                    event = parse(self._decoder.decode(message))
                except OversizedFrame as exc:
                    metrics.REJECTIONS.labels(reason="oversized_frame").inc()
                    log.warning("oversized frame skipped reason=%s", exc.reason)
                    continue
                except MalformedEvent as exc:
                    metrics.REJECTIONS.labels(reason="malformed_frame").inc()
                    log.warning("malformed frame skipped reason=%s frame=%r", exc.reason, message[:120])
                    continue
                if not received:
                    self._check_window(event.time_us, source)
                received += 1
                self._last_received_us = event.time_us
                if type(event) is Commit:
                    self._last_ours = now
                self._pending.append(event)
                if len(self._pending) >= batch_size:
                    await self._ship(source)
        finally:
            self._received = received

    def _check_window(self, first_us: int, source: str) -> None:
        """v1 hosts start a cursor older than their window at their oldest event without a word: a first
        event far newer than the cursor asked for means the events between are gone from this host."""
        asked = self._asked
        if asked is None or first_us - asked <= self.settings.window_gap_seconds * 1_000_000:
            return
        self.gap = WindowGap(asked, first_us, source, time.time_ns() // 1000)
        log.error(
            "jetstream began past its window: asked cursor=%d, first event time_us=%d, %.0f s of events are gone "
            "from host=%s; every account is synced again from its repository",
            asked, first_us, (first_us - asked) / 1e6, source,
        )

    async def _watch(self, ws: ClientConnection, source: str, ended: asyncio.Event) -> None:
        """Time-based flushes, keepalive, stall and quiet detection, and stop requests, for one connection
        (until `ended`, when the receive loop is done with it)."""
        loop = asyncio.get_running_loop()
        stall = self.settings.stall_seconds
        tick = min(self.settings.batch_seconds, 1.0, stall / 4)
        pong: asyncio.Future[float] | None = None
        next_ping = loop.time() + stall / 3
        while not ended.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=tick)
                self._close_reason = "stopped"
                break
            except TimeoutError:
                pass
            if ended.is_set():
                return
            now = loop.time()
            if pong is not None and pong.done():
                self._last_pong, pong = now, None
            if pong is None and now >= next_ping:
                with contextlib.suppress(websockets.ConnectionClosed):
                    pong = asyncio.ensure_future(await ws.ping())
                next_ping = now + stall / 3
            if now - max(self._last_message, self._last_pong) > stall:
                self._close_reason = "stall"
                break
            if now - self._last_ours > self.settings.quiet_seconds:
                self._close_reason = "quiet"
                break
            try:
                await self._ship(source)
            except EmitFailed:
                self._close_reason = "emit_failed"
                break
        await ws.close()

    async def _ship(self, source: str, *, drain: bool = False) -> None:
        """Hand what is pending to `emit` now, and start it once there is room among the batches in flight.

        Calling `emit` before awaiting the batches in flight lets its synchronous part (planning) overlap
        their commits; with `max_in_flight` 1 a batch's awaitable starts only after the previous one has
        succeeded, so a failure stops everything after it. `drain` waits for every batch in flight.
        """
        async with self._ship_lock:
            events, started = self._pending, None
            if events:
                self._pending = []
                try:
                    started = self._emit(events, source)
                except Exception as exc:
                    log.exception("batch could not be prepared events=%d", len(events))
                    raise EmitFailed(str(exc)) from exc
            await self._settle(0 if drain else self._max_in_flight - (started is not None), started)
            if started is not None:
                # Only the newest time is kept: the events themselves can go as soon as emit is done with them.
                newest = max(event.time_us for event in events)
                self._inflight.append(asyncio.create_task(self._send(newest, len(events), started)))
                if drain:  # the batch just started too: nothing may be left in flight
                    await self._settle(0, None)

    async def _settle(self, room: int, started: Awaitable[object] | None) -> None:
        """Await the oldest batches in flight until at most `room` remain; on a failure, drop them all (and
        `started`, not yet begun): they are fetched again from the cursor."""
        try:
            while self._inflight and (len(self._inflight) > room or self._inflight[0].done()):
                await self._inflight[0]
                self._inflight.popleft()
        except EmitFailed:
            self._pending.clear()
            if asyncio.iscoroutine(started):
                started.close()
            for task in self._inflight:
                task.cancel()
            await asyncio.gather(*self._inflight, return_exceptions=True)
            self._inflight.clear()
            raise

    async def _drain(self, source: str) -> None:
        await self._ship(source, drain=True)

    async def _send(self, newest: int, count: int, started: Awaitable[object]) -> None:
        try:
            await started
        except Exception as exc:
            log.exception("batch failed; reconnecting from cursor=%s events=%d", self.cursor, count)
            raise EmitFailed(str(exc)) from exc
        self.cursor = newest if self.cursor is None else max(self.cursor, newest)


class EmitFailed(Exception):
    """A batch could not be applied; the connection is dropped and the batch is fetched again."""
