"""Request metrics as pure ASGI middleware (BaseHTTPMiddleware would cost a task and a queue per request).

Requests are labelled by NSID or route, never by raw path, so the label set stays bounded whatever
clients send.
"""

from __future__ import annotations

import time
from collections.abc import Collection

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from indexer.metrics import REQUEST_SECONDS, REQUESTS

ROUTES = frozenset(
    {"/xrpc/_health", "/.well-known/did.json", "/metrics", "/", "/signin", "/signout", "/oauth/callback", "/upload"}
)
PREFIXES = ("/track/", "/profile/")  # pages whose paths carry names: labelled by the prefix alone


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, nsids: Collection[str]) -> None:
        self.app = app
        self._labels = {f"/xrpc/{nsid}": nsid for nsid in nsids} | {route: route for route in ROUTES}
        self._counters: dict[tuple[str, int], Counter] = {}
        self._timers: dict[str, Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = self._labels.get(path) or _unlisted(path)
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._timer(endpoint).observe(time.perf_counter() - started)
            self._counter(endpoint, status).inc()

    def _counter(self, endpoint: str, status: int) -> Counter:
        counter = self._counters.get((endpoint, status))
        if counter is None:
            counter = self._counters[endpoint, status] = REQUESTS.labels(endpoint, str(status))
        return counter

    def _timer(self, endpoint: str) -> Histogram:
        timer = self._timers.get(endpoint)
        if timer is None:
            timer = self._timers[endpoint] = REQUEST_SECONDS.labels(endpoint)
        return timer


def _unlisted(path: str) -> str:
    if path.startswith("/xrpc/"):
        return "xrpc_unknown"
    for prefix in PREFIXES:
        if path.startswith(prefix):
            return prefix
    return "other"
