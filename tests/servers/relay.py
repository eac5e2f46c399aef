"""A relay on 127.0.0.1 that answers `com.atproto.sync.listReposByCollection` from a real PDS.

dev-env has no relay, and the reference PDS does not serve listReposByCollection (it answers 401). This one
fakes only the wire: it pages the PDS's `com.atproto.sync.listRepos` and asks `com.atproto.repo.describeRepo`
which collections each repository holds, answering `{repos: [{did}], cursor}` pages of at most `limit`
(the cursor is the last DID of the page, as indigo's collectiondir's is opaque). `hidden` DIDs are left out
(relays miss some accounts), and with `only` set no others are; `calls` logs each request's query string.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson

METHOD = "com.atproto.sync.listReposByCollection"


class LoopbackRelay:
    def __init__(self, pds_url: str) -> None:
        self.pds_url = pds_url
        self.hidden: set[str] = set()
        self.only: set[str] | None = None  # list no others (the session's PDS holds other tests' accounts too)
        self.calls: list[dict[str, list[str]]] = []
        self.fail_next = 0  # answer 500 to this many requests
        self._client = httpx.Client(timeout=30.0, trust_env=False)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> LoopbackRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def page(self, collection: str, limit: int, cursor: str | None) -> dict[str, Any]:
        dids = [did for did in self._dids() if did not in self.hidden and (self.only is None or did in self.only)]
        holders = [did for did in dids if self._holds(did, collection)]
        after = [did for did in holders if cursor is None or did > cursor]
        page = after[:limit]
        body: dict[str, Any] = {"repos": [{"did": did} for did in page]}
        if len(after) > limit:
            body["cursor"] = page[-1]
        return body

    def _dids(self) -> list[str]:
        dids: list[str] = []
        cursor = None
        while True:
            params = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
            body = self._client.get(f"{self.pds_url}/xrpc/com.atproto.sync.listRepos", params=params).json()
            dids.extend(repo["did"] for repo in body["repos"] if repo.get("active", True))
            cursor = body.get("cursor")
            if not cursor or not body["repos"]:
                return sorted(dids)

    def _holds(self, did: str, collection: str) -> bool:
        response = self._client.get(f"{self.pds_url}/xrpc/com.atproto.repo.describeRepo", params={"repo": did})
        return response.status_code == 200 and collection in response.json().get("collections", [])


def _handler(relay: LoopbackRelay) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            relay.calls.append(query)
            if parts.path != f"/xrpc/{METHOD}":
                self._send(404, {"error": "MethodNotImplemented", "message": parts.path})
                return
            if relay.fail_next > 0:
                relay.fail_next -= 1
                self._send(500, {"error": "InternalServerError", "message": "fault injected by the test"})
                return
            limit = min(int(query.get("limit", ["500"])[0]), 2000)
            cursor = query.get("cursor", [None])[0]
            self._send(200, relay.page(query["collection"][0], limit, cursor))

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = orjson.dumps(body)
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
