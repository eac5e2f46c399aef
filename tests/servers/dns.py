"""A real DNS server on 127.0.0.1 (UDP) that answers from a table the test writes.

Runs an asyncio datagram endpoint on its own thread and loop, so it serves any test loop and plain
synchronous code alike. dnspython parses each query and builds each answer, so what crosses the socket is
real DNS wire format. Behaviour by name:

    records[(name, type)]   answered with those values (TXT values are the strings, unquoted; a tuple of
                            strings is one record split into several character-strings)
    a name with records of other types only: NOERROR with no answer
    servfail                SERVFAIL
    silent                  no answer at all (the client times out)
    anything else           NXDOMAIN

`queries` lists every (name, type) asked, in order.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from types import TracebackType

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

Value = str | tuple[str, ...]


class DnsServer:
    def __init__(self, ttl: int = 0) -> None:
        self.ttl = ttl
        self.records: dict[tuple[str, str], list[Value]] = {}
        self.servfail: set[str] = set()
        self.silent: set[str] = set()
        self.queries: list[tuple[str, str]] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def nameserver(self) -> str:
        """As RELAY_DNS_NAMESERVERS takes it."""
        return f"127.0.0.1:{self.port}"

    def add(self, name: str, rdtype: str, *values: Value) -> None:
        self.records.setdefault((name.lower(), rdtype), []).extend(values)

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(sock, ready),), name="dns", daemon=True)
        self._thread.start()
        ready.wait()

    def stop(self) -> None:
        assert self._loop is not None and self._thread is not None and self._stopped is not None
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join()

    def __enter__(self) -> DnsServer:
        self.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    async def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        transport, _ = await self._loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        ready.set()
        try:
            await self._stopped.wait()
        finally:
            transport.close()

    def answer(self, data: bytes) -> bytes | None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        for question in query.question:
            name = question.name.to_text(omit_final_dot=True).lower()
            rdtype = dns.rdatatype.to_text(question.rdtype)
            self.queries.append((name, rdtype))
            if name in self.silent:
                return None
            if name in self.servfail:
                response.set_rcode(dns.rcode.SERVFAIL)
            elif (name, rdtype) in self.records:
                texts = [_text(rdtype, value) for value in self.records[(name, rdtype)]]
                response.answer.append(dns.rrset.from_text_list(question.name, self.ttl, "IN", rdtype, texts))
            elif not any(known == name for known, _ in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()


def _text(rdtype: str, value: Value) -> str:
    if rdtype != "TXT":
        assert isinstance(value, str)
        return value
    parts = (value,) if isinstance(value, str) else value
    return " ".join('"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"' for part in parts)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a datagram endpoint's transport

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        reply = self._server.answer(data)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)
