"""A web host on 127.0.0.1 that answers `/.well-known/atproto-did` per Host header, good or hostile.

The audio test server's uvicorn shell (threads, TLS, hit counts) with another responder: `answers[host]` is
the (status, headers, body) served at the well-known path for that Host; `delays[host]` holds the answer
back that many seconds. Anything else is a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from tests.servers.audio import AudioServer, Headers, Scope


class WellKnownServer(AudioServer):
    def __init__(self, **tls: Any) -> None:
        super().__init__(**tls)
        self.answers: dict[str, tuple[int, Headers, bytes]] = {}
        self.delays: dict[str, float] = {}

    def serve(self, host: str, body: bytes, status: int = 200, headers: Headers | None = None) -> None:
        self.answers[host] = (status, headers if headers is not None else [(b"content-type", b"text/plain")], body)

    def redirect(self, host: str, location: str, status: int = 302) -> None:
        self.answers[host] = (status, [(b"location", location.encode())], b"")

    async def _respond(self, scope: Scope, path: str) -> tuple[int, Headers, bytes]:
        host = dict(scope["headers"]).get(b"host", b"").decode().rsplit(":", 1)[0]
        if path != "/.well-known/atproto-did" or host not in self.answers:
            return 404, [], b""
        if host in self.delays:
            assert self._stopping is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.delays[host])
        return self.answers[host]
