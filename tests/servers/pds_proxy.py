"""A PLC directory and PDS stand-in that forwards to the real local ones, and can fail on cue.

DID documents fetched through it name the proxy itself as the account's PDS, so a service resolving a DID
here sends every PDS call through the proxy, where a test can make one XRPC method fail: `"drop"` reads
the request and closes the connection without a word (a PDS dying mid-request), a number answers that
HTTP status (with `fault_headers`, Retry-After say), for good or `fault_counts` times; `delays` holds a method's answer back that many
seconds (a slow PDS); `before` runs a callable just before a method is forwarded (a concurrent writer,
say); `rewrite` changes a method's answer body on its way back (a flipped byte, a commit signed with
another key); `documents` changes a DID document on its way back (another key, another handle).
`calls` logs each method called, `log` each call's (method, query string, monotonic time).
Everything else is passed through unchanged. It runs on a stdlib threading HTTP server, which
(unlike an ASGI server) can drop a connection after reading the request.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import httpx
import orjson

PDS_SERVICE = "AtprotoPersonalDataServer"


class PdsProxy:
    def __init__(self, pds_url: str, plc_url: str) -> None:
        self.pds_url = pds_url
        self.plc_url = plc_url
        self.faults: dict[str, str | int] = {}
        self.fault_headers: dict[str, dict[str, str]] = {}
        self.fault_counts: dict[str, int] = {}
        self.delays: dict[str, float] = {}
        self.before: dict[str, Callable[[], object]] = {}
        self.rewrite: dict[str, Callable[[bytes], bytes]] = {}
        self.documents: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.calls: list[str] = []
        self.log: list[tuple[str, str, float]] = []
        self._client = httpx.Client(timeout=30.0)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> PdsProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        if path.startswith("/did:"):
            response = self._client.get(self.plc_url + path)
            if response.status_code != 200:
                return response
            document = response.json()
            for service in document.get("service", []):
                if service.get("type") == PDS_SERVICE:
                    service["serviceEndpoint"] = self.url
            if self.documents is not None:
                document = self.documents(document)
            return httpx.Response(200, content=orjson.dumps(document), headers={"content-type": "application/json"})
        return self._client.request(method, self.pds_url + path, headers=headers, content=body)


def _handler(proxy: PdsProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def _handle(self, method: str) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            nsid, _, query = self.path.partition("?")
            nsid = nsid.removeprefix("/xrpc/")
            proxy.calls.append(nsid)
            proxy.log.append((nsid, query, time.monotonic()))
            delay = proxy.delays.get(nsid)
            if delay:
                time.sleep(delay)
            fault = proxy.faults.get(nsid)
            if fault is not None and nsid in proxy.fault_counts:
                proxy.fault_counts[nsid] -= 1
                if proxy.fault_counts[nsid] <= 0:
                    del proxy.fault_counts[nsid], proxy.faults[nsid]
            if fault == "drop":
                self.close_connection = True
                return
            if isinstance(fault, int):
                body = orjson.dumps({"error": "Injected", "message": "fault injected by the test"})
                self._send(fault, body, proxy.fault_headers.get(nsid, {}))
                return
            hook = proxy.before.get(nsid)
            if hook is not None:
                hook()
            keep = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
            response = proxy.forward(method, self.path, keep, body)
            content = response.content
            rewrite = proxy.rewrite.get(nsid)
            if rewrite is not None and response.status_code == 200:
                content = rewrite(content)
            self._send(response.status_code, content, {"content-type": response.headers.get("content-type")})

        def _send(self, status: int, body: bytes, headers: dict[str, Any]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                if value:
                    self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (timeout, kill -9)
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
