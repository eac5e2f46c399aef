"""A real HTTP server on 127.0.0.1 that plays every part an audio host can play, good or bad.

Runs uvicorn (a raw ASGI app, no framework, so it keeps up with a HEAD benchmark) on its own thread and
loop, so it serves any test loop and any plain script alike. Behaviour is chosen by path:

    /audio/<any>         200 audio/mpeg (GET honours Range: 206 with Content-Range)
    /octet/<any>         200 application/octet-stream
    /html/<any>          200 text/html
    /bare/<any>          200 with no Content-Type
    /status/<code>       that status, empty body
    /nohead/<any>        405 to HEAD; GET serves audio
    /notimpl/<any>       501 to HEAD; GET serves audio
    /flaky/<n>/<any>     500 for the first n requests to this exact path, then audio
    /slow/<seconds>      waits that long (or until the server stops), then audio
    /redirect/<n>        302 to /redirect/<n-1>; /redirect/0 serves audio
    /to?url=<location>   302 to exactly that Location

`hits` counts requests per path (query excluded); `peak` is the most requests ever in flight at once;
`overrides` answers a path with another status for as long as it holds it (audio that goes away).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
from collections import Counter
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

import uvicorn

AUDIO_BYTES = bytes(range(256)) * 64  # 16 KiB of "audio"
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")

Scope = dict[str, Any]
Headers = list[tuple[bytes, bytes]]


class AudioServer:
    """Plain HTTP by default; give a certificate and key (PEM files) to serve HTTPS instead."""

    def __init__(self, *, certfile: str | None = None, keyfile: str | None = None) -> None:
        self._tls = (certfile, keyfile)
        self.hits: Counter[str] = Counter()
        self.overrides: dict[str, int] = {}
        self.peak = 0
        self._in_flight = 0
        self.base_url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self) -> str:
        """Listen before returning, so the base URL is usable at once; serve on a daemon thread."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(2048)
        scheme = "https" if self._tls[0] else "http"
        self.base_url = f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            self._app,
            interface="asgi3",
            lifespan="off",
            log_level="warning",
            access_log=False,
            backlog=2048,
            ssl_certfile=self._tls[0],
            ssl_keyfile=self._tls[1],
        )
        self._server = uvicorn.Server(config)
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sock, ready), name="audio-server", daemon=True)
        self._thread.start()
        ready.wait()
        return self.base_url

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None and self._loop is not None
        self._server.should_exit = True
        self._loop.call_soon_threadsafe(self._stopping.set)  # type: ignore[union-attr]
        self._thread.join()

    def __enter__(self) -> AudioServer:
        self.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> AudioServer:
        return self.__enter__()

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await asyncio.to_thread(self.stop)

    def _run(self, sock: socket.socket, ready: threading.Event) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            ready.set()
            await self._server.serve(sockets=[sock])  # type: ignore[union-attr]

        asyncio.run(serve())

    async def _app(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        self.hits[path] += 1
        self._in_flight += 1
        self.peak = max(self.peak, self._in_flight)
        try:
            status, headers, body = await self._respond(scope, path)
        finally:
            self._in_flight -= 1
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    async def _respond(self, scope: Scope, path: str) -> tuple[int, Headers, bytes]:
        method: str = scope["method"]
        if path in self.overrides:
            return self.overrides[path], [], b""
        parts = path.strip("/").split("/")
        kind, args = parts[0], parts[1:]
        if kind == "audio":
            return _content(scope, b"audio/mpeg")
        if kind == "octet":
            return _content(scope, b"application/octet-stream")
        if kind == "html":
            return 200, [(b"content-type", b"text/html; charset=utf-8")], b"<html>not audio</html>"
        if kind == "bare":
            return 200, [], b"?"
        if kind == "status":
            return int(args[0]), [], b""
        if kind in ("nohead", "notimpl") and method == "HEAD":
            return (405, [(b"allow", b"GET")], b"") if kind == "nohead" else (501, [], b"")
        if kind in ("nohead", "notimpl"):
            return _content(scope, b"audio/mpeg")
        if kind == "flaky":
            return (500, [], b"") if self.hits[path] <= int(args[0]) else _content(scope, b"audio/mpeg")
        if kind == "slow":
            assert self._stopping is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), float(args[0]))
            return _content(scope, b"audio/mpeg")
        if kind == "redirect":
            left = int(args[0])
            if left == 0:
                return _content(scope, b"audio/mpeg")
            return 302, [(b"location", f"/redirect/{left - 1}".encode())], b""
        if kind == "to":
            location = parse_qs(scope["query_string"].decode())["url"][0]
            return 302, [(b"location", location.encode())], b""
        return 404, [], b""


def _content(scope: Scope, content_type: bytes) -> tuple[int, Headers, bytes]:
    headers = dict(scope["headers"])
    match = _RANGE.fullmatch(headers.get(b"range", b"").decode())
    if scope["method"] != "GET" or match is None:
        return 200, [(b"content-type", content_type), (b"content-length", str(len(AUDIO_BYTES)).encode())], AUDIO_BYTES
    first = int(match[1])
    last = min(int(match[2] or len(AUDIO_BYTES) - 1), len(AUDIO_BYTES) - 1)
    body = AUDIO_BYTES[first : last + 1]
    return (
        206,
        [
            (b"content-type", content_type),
            (b"content-range", f"bytes {first}-{last}/{len(AUDIO_BYTES)}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
        body,
    )
