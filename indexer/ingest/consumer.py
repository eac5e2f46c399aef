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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable

import websockets
from websockets.asyncio.client import ClientConnection

from indexer import metrics
from indexer.atproto.nsid import TRACK_COLLECTION
from indexer.config import IngestSettings
from indexer.errors import MalformedEvent
from indexer.ingest.events import Commit, Event, parse
from indexer.ingest.jetstream import FrameDecoder, subscribe_url

log = logging.getLogger(__name__)

Emit = Callable[[list[Event], str], Awaitable[object]]
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


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

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Consume until stop(); every received event is emitted (or dropped for refetch) before return."""
        failures = 0
        rewind_us = int(self.settings.rewind_seconds * 1_000_000) if self._rewind_first else 0
        while not self._stopping.is_set():
            base = self.settings.jetstream_urls[self._host]
            cursor = None if self.cursor is None else self.cursor - rewind_us
            url = subscribe_url(base, self._collections, cursor, self.settings.compress)
            self.connections += 1
            received, reason = await self._connect(url, base)
            if self._stopping.is_set():
                break
            metrics.RECONNECTS.labels(reason=reason).inc()
            switch = reason == "quiet" or not received
            failures = 0 if received else failures + 1
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

    async def _connect(self, url: str, source: str) -> tuple[int, str]:
        """One connection's life; returns how many events it delivered and why it ended."""
        stall = self.settings.stall_seconds
        self._close_reason = "closed"
        received = 0
        try:
            async with websockets.connect(
                url,
                open_timeout=min(10.0, stall),
                ping_interval=None,  # the watchdog pings, so that a pong counts as a sign of life
                close_timeout=min(1.0, stall / 2),  # a stop mid-replay must not wait behind the backlog
                max_size=MAX_MESSAGE_BYTES,
                compression=None,
            ) as ws:
                log.info("jetstream connected url=%s", url)
                self.connected_to = source
                loop = asyncio.get_running_loop()
                self._last_message = self._last_ours = self._last_pong = loop.time()
                watchdog = asyncio.create_task(self._watch(ws, source))
                try:
                    received = await self._receive(ws, source)
                finally:
                    watchdog.cancel()
        except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            self._close_reason = f"connect_failed:{type(exc).__name__}"
        except websockets.ConnectionClosed:
            pass
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
        return received, self._close_reason.split(":", 1)[0]

    async def _receive(self, ws: ClientConnection, source: str) -> int:
        loop = asyncio.get_running_loop()
        batch_size = self.settings.batch_size
        received = 0
        async for message in ws:
            now = loop.time()
            self._last_message = now
            try:
                event = parse(self._decoder.decode(message))
            except MalformedEvent as exc:
                metrics.REJECTIONS.labels(reason="malformed_frame").inc()
                log.warning("malformed frame skipped reason=%s frame=%r", exc.reason, message[:120])
                continue
            received += 1
            if type(event) is Commit:
                self._last_ours = now
            self._pending.append(event)
            if len(self._pending) >= batch_size:
                await self._ship(source)
        return received

    async def _watch(self, ws: ClientConnection, source: str) -> None:
        """Time-based flushes, keepalive, stall and quiet detection, and stop requests, for one connection."""
        loop = asyncio.get_running_loop()
        stall = self.settings.stall_seconds
        tick = min(self.settings.batch_seconds, 1.0, stall / 4)
        pong: asyncio.Future[float] | None = None
        next_ping = loop.time() + stall / 3
        while True:
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=tick)
                self._close_reason = "stopped"
                break
            except TimeoutError:
                pass
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
            room = 0 if drain else self._max_in_flight - (started is not None)
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
            if started is not None:
                # Only the newest time is kept: the events themselves can go as soon as emit is done with them.
                newest = max(event.time_us for event in events)
                self._inflight.append(asyncio.create_task(self._send(newest, len(events), started)))

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
