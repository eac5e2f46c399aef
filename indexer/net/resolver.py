"""One DNS resolver for the whole service: A/AAAA for the SSRF guard, TXT for handles.

Built on dnspython and pointed at `RELAY_DNS_NAMESERVERS` (default: the system's resolvers from
/etc/resolv.conf). One resolver means one place that decides who answers our DNS: the guard's addresses and
the handles' TXT records come from the same servers, and tests point both at a loopback server they control.

It plugs into `netguard.GuardedBackend` as its `Resolver` (`resolve(host) -> list[str]`), failing the way the
guard expects: an unknown name raises `socket.gaierror`, a timeout `TimeoutError`, any other DNS failure
`OSError`. The guard vets every address returned, so nothing here needs to judge them.

No cache: the guard resolves once per new connection (connections are pooled), and a handle's answer is
cached by the caller for far longer than DNS TTLs anyway (the handle spec says TTLs are too short for that).
`localhost` and `*.localhost` answer loopback without a query, as RFC 6761 asks and as the OS resolver does
from /etc/hosts; the guard refuses loopback unless RELAY_ALLOW_INSECURE.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from indexer.config import NetworkSettings
from indexer.errors import ConfigError

DEFAULT_TIMEOUT_SECONDS = 5.0
_LOOPBACK = ["127.0.0.1", "::1"]


class DnsResolver:
    def __init__(
        self, nameservers: Sequence[tuple[str, int]] = (), *, timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> None:
        """`nameservers` as (IP, port) pairs; none means the system's resolvers."""
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers]
        else:
            try:
                resolver = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                raise ConfigError("no system DNS resolvers (/etc/resolv.conf): set RELAY_DNS_NAMESERVERS") from None
        resolver.lifetime = timeout
        self._resolver = resolver

    @classmethod
    def from_settings(cls, net: NetworkSettings, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> DnsResolver:
        return cls(net.nameservers, timeout=timeout)

    async def resolve(self, host: str) -> list[str]:
        """Every IPv4 and IPv6 address of `host` (A and AAAA asked together)."""
        name = host.rstrip(".").lower()
        if name == "localhost" or name.endswith(".localhost"):
            return list(_LOOPBACK)
        results = await asyncio.gather(self._query(name, "A"), self._query(name, "AAAA"), return_exceptions=True)
        addresses = [str(record) for result in results if isinstance(result, dns.resolver.Answer) for record in result]
        if addresses:
            return addresses  # one family failing (AAAA often does) leaves the other usable
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if all(result is _NXDOMAIN for result in results):
            raise socket.gaierror(socket.EAI_NONAME, f"{name}: no such domain")
        return []

    async def txt(self, name: str) -> list[str]:
        """The TXT records at `name`, each record's character-strings joined; [] when there are none."""
        result = await self._query(name.rstrip(".").lower(), "TXT")
        if not isinstance(result, dns.resolver.Answer):
            return []
        texts = []
        for record in result:
            try:
                texts.append(b"".join(record.strings).decode("utf-8"))
            except UnicodeDecodeError:
                continue  # not text: cannot be a record we read
        return texts

    async def _query(self, name: str, rdtype: str) -> dns.resolver.Answer | object:
        """The answer, `_NXDOMAIN`, or `_NO_ANSWER`; raises TimeoutError or OSError when DNS fails."""
        try:
            return await self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return _NXDOMAIN
        except dns.resolver.NoAnswer:
            return _NO_ANSWER
        except dns.exception.Timeout:
            raise TimeoutError(f"DNS {rdtype} lookup of {name} timed out") from None
        except dns.exception.DNSException as exc:
            raise OSError(f"DNS {rdtype} lookup of {name} failed: {type(exc).__name__}") from None


_NXDOMAIN = object()
_NO_ANSWER = object()
