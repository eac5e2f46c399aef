"""SSRF guard for outbound audio checks.

Audio URLs come from strangers' records, so every request they cause is treated as hostile. Two layers:

- `check_url` / `check_address`: the sans-I/O policy (scheme, credentials, length, host allowlist, and what
  kinds of IP address may be dialled). Both raise `UnsafeURL` with the reason.
- `GuardedBackend`: an httpcore network backend that resolves the host itself, vets every address it got and
  dials only a vetted IP. Checking at connect time, on the address actually used, is what defeats DNS
  rebinding; the URL check alone cannot. `GuardedTransport` plugs that backend into httpx, whose own
  transport does not accept a network backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Protocol

import httpcore
import httpx

from indexer.errors import UnsafeURL

MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HOSTNAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")
# A last label like "1" or "0x7f" makes resolvers read the name as an IPv4 number ("127.1", "2130706433").
_NUMERIC_LABEL = re.compile(r"\d+|0x[0-9a-f]*")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# IETF protocol assignments: older Pythons' `is_global` calls most of this range global.
_IETF_PROTOCOL = ipaddress.IPv4Network("192.0.0.0/24")


def check_url(url: str, *, allow_insecure: bool, hosts: frozenset[str] = frozenset()) -> httpx.URL:
    """Vet a URL before any connection; return it parsed by the same parser the client will use.

    Parsing with httpx (not urllib) means the policy and the client cannot disagree about the host.
    """
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURL(f"URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UnsafeURL(f"not a valid URL: {exc}") from None
    allowed = ("https", "http") if allow_insecure else ("https",)
    if parsed.scheme not in allowed:
        raise UnsafeURL(f"scheme {parsed.scheme!r} is not allowed")
    if parsed.userinfo:
        raise UnsafeURL("URL carries credentials")
    host = parsed.raw_host.decode("ascii").lower()
    if not host:
        raise UnsafeURL("URL has no host")
    address = _ip_literal(host)
    if address is None and not _HOSTNAME.fullmatch(host):
        raise UnsafeURL(f"host {host!r} is not a valid hostname")
    if address is None and _NUMERIC_LABEL.fullmatch(host.rstrip(".").rsplit(".", 1)[-1]):
        raise UnsafeURL(f"host {host!r} looks like a non-canonical IP address")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise UnsafeURL(f"port {parsed.port} is out of range")
    if hosts and host.rstrip(".") not in hosts:
        raise UnsafeURL(f"host {host!r} is not in the allowlist")
    if address is not None:
        check_address(host, allow_loopback=allow_insecure)
    return parsed


def check_address(ip: str, *, allow_loopback: bool) -> None:
    """Refuse any address that is not globally routable; an IPv6 wrapper of IPv4 is judged by what it wraps."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise UnsafeURL(f"{ip!r} is not an IP address") from None
    embedded = _embedded_ipv4(address)
    kind = _special_kind(embedded or address)
    if kind is None or (kind == "loopback" and allow_loopback):
        return
    if embedded is not None:
        raise UnsafeURL(f"address {ip} embeds {embedded}, which is {kind}")
    raise UnsafeURL(f"address {ip} is {kind}")


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _special_kind(address: IPAddress) -> str | None:
    # Order matters: 127.0.0.1 is also "private" and 169.254.x also "private"; name the sharper kind.
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global or (address.version == 4 and address in _IETF_PROTOCOL):
        return "not globally routable"
    return None


class NoSuchHost(httpcore.ConnectError):
    """DNS says the name does not exist (NXDOMAIN): an answer, unlike a DNS server that failed or was slow,
    so a caller may treat it as final (a handle whose host is gone does not come back on a retry)."""


def no_such_host(exc: BaseException) -> bool:
    """Whether an httpx error (or what it was raised from) is the guard's NoSuchHost."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, NoSuchHost):
            return True
        seen = seen.__cause__
    return False


class Resolver(Protocol):
    """A host's addresses, for the guard to vet: `indexer.net.resolver.DnsResolver` (RELAY_DNS_NAMESERVERS) or
    `SystemResolver`. An unknown name raises OSError (socket.gaierror), a slow one TimeoutError."""

    async def resolve(self, host: str) -> list[str]: ...


class SystemResolver:
    """The OS resolver through the running loop, as the default backend would have used it."""

    async def resolve(self, host: str) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Dials only vetted IP addresses; `inner` does the actual dialling (and TLS, with the original SNI).

    httpcore calls `start_tls(server_hostname=<URL host>)` on the stream this returns, so certificates are
    still checked against the hostname even though the socket was opened to an IP.
    """

    def __init__(
        self,
        *,
        allow_loopback: bool,
        resolver: Resolver | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._allow_loopback = allow_loopback
        self._resolver = resolver or SystemResolver()
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: httpcore.ConnectError | None = None
        for ip in await self._vetted_addresses(host, timeout):
            try:
                return await self._inner.connect_tcp(
                    ip, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except httpcore.ConnectError as exc:
                failure = exc
        assert failure is not None  # _vetted_addresses never returns an empty list
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeURL("unix sockets are never dialled")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)

    async def _vetted_addresses(self, host: str, timeout: float | None) -> list[str]:
        if _ip_literal(host) is not None:
            check_address(host, allow_loopback=self._allow_loopback)
            return [host]
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._resolver.resolve(host)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_NONAME:
                raise NoSuchHost(f"cannot resolve {host}: no such domain") from None
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        # One bad address condemns the name: a mix of public and private answers is a rebinding tell.
        for ip in addresses:
            try:
                check_address(ip, allow_loopback=self._allow_loopback)
            except UnsafeURL as exc:
                raise UnsafeURL(f"{host}: {exc.reason}") from None
        return addresses


# Most specific first: the first isinstance match wins.
_HTTPCORE_TO_HTTPX: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    """Re-raise httpcore errors as their httpx twins, so callers handle one family."""
    try:
        yield
    except Exception as exc:
        for source, target in _HTTPCORE_TO_HTTPX:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        with _httpx_errors():
            await self._stream.aclose()  # type: ignore[attr-defined]  # httpcore's pool streams have it


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore pool that dials through a `GuardedBackend`."""

    def __init__(self, backend: GuardedBackend, *, max_connections: int) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            network_backend=backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),  # type: ignore[arg-type]  # async pool: async stream
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
