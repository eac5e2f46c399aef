"""Does a track's audioUrl really serve audio? One HEAD (or a one-byte ranged GET) per URL says so.

"Origin trust is not existence": a valid-looking CDN URL can have nothing behind it, so every track's URL is
probed before the track is served. The URL comes from a stranger's record, so every hop goes through the
SSRF guard in `indexer.net.netguard`.

Outcomes: VERIFIED (2xx with an audio type), UNAVAILABLE (the server answered, and the answer is no),
UNREACHABLE (5xx, 408/429, timeouts, connection errors, after `audio_retries` attempts in all), REFUSED (the
guard said no; never retried). A redirect chain longer than `MAX_REDIRECTS` is UNAVAILABLE: the server did
answer, and retrying would walk the same chain.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

import httpcore
import httpx

from indexer.config import AudioCheckSettings, NetworkSettings
from indexer.db.rows import AudioResult, AudioState
from indexer.errors import UnsafeURL
from indexer.metrics import AUDIO_CHECKS
from indexer.net.netguard import GuardedBackend, GuardedTransport, Resolver, check_url
from indexer.slots import KeyedSlots

log = logging.getLogger(__name__)

MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NO_HEAD = frozenset({405, 501})
_TRANSIENT_4XX = frozenset({408, 429})  # the server may well say yes later
_HEADERS = {"user-agent": "relay-appview audio-check"}
_RANGE_HEADERS = {**_HEADERS, "range": "bytes=0-0"}


def judge(status: int, content_type: str | None) -> tuple[AudioState, str]:
    """Classify a final (non-redirect) answer."""
    if status in (200, 206):
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if media.startswith("audio/") or media == "application/octet-stream":
            return AudioState.VERIFIED, f"HTTP {status} {media}"
        return AudioState.UNAVAILABLE, f"content type {media!r} is not audio" if media else "no content type"
    if status in (404, 410):
        return AudioState.UNAVAILABLE, f"HTTP {status}: no such file"
    if status >= 500 or status in _TRANSIENT_4XX:
        return AudioState.UNREACHABLE, f"HTTP {status}"
    return AudioState.UNAVAILABLE, f"unexpected HTTP {status}"


class AudioChecker:
    """Probes audio URLs over one shared keep-alive pool, bounded overall and per host."""

    def __init__(
        self,
        settings: AudioCheckSettings,
        net: NetworkSettings,
        *,
        resolver: Resolver | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        retry_base_seconds: float = 0.5,
    ) -> None:
        self._allow_insecure = net.allow_insecure
        self._hosts = settings.hosts
        self._attempts = max(1, settings.retries)
        self._timeout = settings.timeout_seconds
        self._retry_base = retry_base_seconds
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._host_slots = KeyedSlots[str](settings.per_host)
        backend = GuardedBackend(allow_loopback=net.allow_insecure, resolver=resolver, inner=network_backend)
        # One keep-alive pool for every check. Requests go straight to the transport rather than through an
        # httpx.AsyncClient: the client parses every Location even with follow_redirects=False and turns a
        # malformed one into a (retryable) transport error, and it would mount environment proxies beside
        # the guard. Redirects are followed here, each hop vetted first.
        self._transport = GuardedTransport(backend, max_connections=settings.concurrency)
        self._extensions = {"timeout": httpx.Timeout(settings.timeout_seconds).as_dict()}

    async def check(self, url: str) -> AudioResult:
        try:
            result = await self._with_retries(url)
        except UnsafeURL as exc:
            result = AudioResult(url, AudioState.REFUSED, exc.reason, None, None)
        AUDIO_CHECKS.labels(outcome=result.state).inc()
        if result.state in (AudioState.REFUSED, AudioState.UNREACHABLE):
            # repr, cut short: the URL is a stranger's string and must not forge or flood log lines.
            log.info("audio check %s url=%.300r reason=%.300r", result.state, url, result.reason)
        return result

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> AudioChecker:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _with_retries(self, url: str) -> AudioResult:
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(self._retry_base * 2 ** (attempt - 1))
            result = await self._follow(url)
            if result.state is not AudioState.UNREACHABLE:
                break
        return result

    async def _follow(self, url: str) -> AudioResult:
        """One attempt: walk the redirect chain, vetting every hop before it is dialled."""
        target = check_url(url, allow_insecure=self._allow_insecure, hosts=self._hosts)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = await self._probe(target)
            except (httpx.TimeoutException, TimeoutError):
                return AudioResult(url, AudioState.UNREACHABLE, "timed out", None, None)
            except httpx.TransportError as exc:
                return AudioResult(url, AudioState.UNREACHABLE, f"{type(exc).__name__}: {exc}", None, None)
            content_type = response.headers.get("content-type")
            location = response.headers.get("location")
            if response.status_code not in _REDIRECTS:
                state, reason = judge(response.status_code, content_type)
                return AudioResult(url, state, reason, response.status_code, content_type)
            if not location:
                return AudioResult(url, AudioState.UNAVAILABLE, "redirect without Location", response.status_code, None)
            target = _redirect_target(target, location, self._allow_insecure, self._hosts)
        reason = f"more than {MAX_REDIRECTS} redirects"
        return AudioResult(url, AudioState.UNAVAILABLE, reason, response.status_code, None)

    async def _probe(self, url: httpx.URL) -> httpx.Response:
        """HEAD, or for servers that refuse HEAD a ranged GET whose body is never read."""
        async with self._host_slots.hold(url.host), self._slots, asyncio.timeout(self._timeout):
            response = await self._send("HEAD", url, _HEADERS)
            if response.status_code in _NO_HEAD:
                response = await self._send("GET", url, _RANGE_HEADERS)
            return response

    async def _send(self, method: str, url: httpx.URL, headers: dict[str, str]) -> httpx.Response:
        request = httpx.Request(method, url, headers=headers, extensions=self._extensions)
        response = await self._transport.handle_async_request(request)
        if method == "HEAD":
            await response.aread()  # empty, but reading to the end keeps the connection alive
        await response.aclose()
        return response


def _redirect_target(current: httpx.URL, location: str, allow_insecure: bool, hosts: frozenset[str]) -> httpx.URL:
    try:
        joined = str(current.join(location))
    except httpx.InvalidURL as exc:
        raise UnsafeURL(f"redirect to an invalid URL: {exc}") from None
    try:
        return check_url(joined, allow_insecure=allow_insecure, hosts=hosts)
    except UnsafeURL as exc:
        raise UnsafeURL(f"redirect to {joined}: {exc.reason}") from None
