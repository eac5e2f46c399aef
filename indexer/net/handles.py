"""Which DID does a handle point to? A DID document's handle counts only when the handle points back.

`alsoKnownAs` in a DID document is the account's claim; the handle's domain must confirm it (atproto handle
spec), else Bluesky shows `handle.invalid`. Two ways, in this order:

1. DNS TXT at `_atproto.<handle>`: the one record starting `did=`. Several `did=` records are ambiguous and
   the resolution fails (the spec says so) rather than picking one; a single malformed one fails too.
2. With no `did=` record, `https://<handle>/.well-known/atproto-did`: a 2xx whose body, trimmed, is the DID.
   Fetched through the SSRF guard (the handle is a stranger's domain), with the service's one DNS resolver,
   at most 3 redirects each vetted, a 4 KiB body cap and an overall timeout. With RELAY_ALLOW_INSECURE, a
   failed https connection is retried over http (development servers have no certificate).

Nothing raises on hostile input: the outcome is a `HandleResolution` with the DID or None, the reason, and
whether trying again later may help (`transient`: timeouts, DNS failures, 5xx). Caching is the caller's.
Reserved TLDs never resolve; `.test` only with RELAY_ALLOW_INSECURE.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import httpcore
import httpx

from indexer.atproto.syntax import is_did, is_handle
from indexer.config import NetworkSettings
from indexer.errors import UnsafeURL
from indexer.net.netguard import GuardedBackend, GuardedTransport, check_url, no_such_host

MAX_BODY_BYTES = 4096
MAX_REDIRECTS = 3
MAX_DNS_HANDLE_LENGTH = 244  # `_atproto.` + handle must stay a valid 253-byte name
DISALLOWED_TLDS = frozenset({"alt", "arpa", "example", "internal", "invalid", "local", "localhost", "onion"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TRANSIENT_STATUS = frozenset({408, 425, 429})
_HEADERS = {"user-agent": "relay-appview handle-check", "accept": "text/plain"}


class HandleDns(Protocol):
    """What handles need of DNS: TXT records, and addresses for the guard (`resolver.DnsResolver`)."""

    async def txt(self, name: str) -> list[str]: ...

    async def resolve(self, host: str) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class HandleResolution:
    handle: str
    did: str | None
    method: str | None  # "dns", "https" or "http" when resolved
    reason: str | None  # why not, when not
    transient: bool = False  # a retry later may answer differently

    def confirms(self, did: str) -> bool:
        return self.did is not None and self.did == did


class HandleResolver:
    def __init__(
        self,
        net: NetworkSettings,
        dns: HandleDns,
        *,
        timeout_seconds: float = 10.0,
        max_connections: int = 16,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._allow_insecure = net.allow_insecure
        self._dns = dns
        self._timeout = timeout_seconds
        backend = GuardedBackend(allow_loopback=net.allow_insecure, resolver=dns, inner=network_backend)
        # The transport itself, not an httpx.AsyncClient: no environment proxies beside the guard, and each
        # redirect hop is vetted here before it is dialled (as in audio_check).
        self._transport = GuardedTransport(backend, max_connections=max_connections)
        self._extensions = {"timeout": httpx.Timeout(timeout_seconds).as_dict()}

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def resolve(self, handle: str) -> HandleResolution:
        handle = handle.lower()
        refusal = self._refusal(handle)
        if refusal is not None:
            return HandleResolution(handle, None, None, refusal)
        answer, dns_note, dns_transient = await self._txt(handle)
        if answer is not None:
            return answer
        resolution = await self._well_known(handle)
        if resolution.did is not None:
            return resolution
        transient = resolution.transient or dns_transient
        return HandleResolution(handle, None, None, f"{dns_note}; {resolution.reason}", transient)

    async def _txt(self, handle: str) -> tuple[HandleResolution | None, str, bool]:
        """A final answer from DNS, or None with a note on what DNS said and whether it failed."""
        if len(handle) > MAX_DNS_HANDLE_LENGTH:
            return None, "no did= TXT record", False
        name = f"_atproto.{handle}"
        try:
            async with asyncio.timeout(self._timeout):
                records = [text for text in await self._dns.txt(name) if text.startswith("did=")]
        except (OSError, TimeoutError) as exc:
            return None, f"DNS failed ({str(exc)[:200]})", True
        if len(records) > 1:
            return HandleResolution(handle, None, None, f"{name} has {len(records)} did= TXT records"), "", False
        if not records:
            return None, "no did= TXT record", False
        did = records[0].removeprefix("did=")
        if not is_did(did):
            return HandleResolution(handle, None, None, f"{name}: {did[:100]!r} is not a DID"), "", False
        return HandleResolution(handle, did, "dns", None), "", False

    def _refusal(self, handle: str) -> str | None:
        if not is_handle(handle):
            return f"{handle[:100]!r} is not a valid handle"
        tld = handle.rsplit(".", 1)[1]
        if tld in DISALLOWED_TLDS or (tld == "test" and not self._allow_insecure):
            return f"handles under .{tld} do not resolve"
        return None

    async def _well_known(self, handle: str) -> HandleResolution:
        resolution = await self._fetch(handle, "https")
        if resolution.did is None and resolution.transient and self._allow_insecure:
            plain = await self._fetch(handle, "http")
            if plain.did is not None:
                return plain
            return HandleResolution(handle, None, None, f"{resolution.reason}; {plain.reason}", plain.transient)
        return resolution

    async def _fetch(self, handle: str, scheme: str) -> HandleResolution:
        url = f"{scheme}://{handle}/.well-known/atproto-did"
        try:
            async with asyncio.timeout(self._timeout):
                return await self._follow(handle, url)
        except UnsafeURL as exc:
            return HandleResolution(handle, None, None, f"{url}: {exc.reason}")
        except (httpx.TimeoutException, TimeoutError):
            return HandleResolution(handle, None, None, f"{url}: timed out", transient=True)
        except httpx.TransportError as exc:
            if no_such_host(exc):
                return HandleResolution(handle, None, None, f"{url}: no such domain")
            return HandleResolution(handle, None, None, f"{url}: {type(exc).__name__}", transient=True)

    async def _follow(self, handle: str, url: str) -> HandleResolution:
        target = check_url(url, allow_insecure=self._allow_insecure)
        for _ in range(MAX_REDIRECTS + 1):
            request = httpx.Request("GET", target, headers=_HEADERS, extensions=self._extensions)
            response = await self._transport.handle_async_request(request)
            try:
                if response.status_code not in _REDIRECTS:
                    return await self._judge(handle, url, target.scheme, response)
                location = response.headers.get("location")
            finally:
                await response.aclose()
            if not location:
                return HandleResolution(handle, None, None, f"{url}: redirect without Location")
            target = _redirect_target(target, location, self._allow_insecure)
        return HandleResolution(handle, None, None, f"{url}: more than {MAX_REDIRECTS} redirects")

    async def _judge(self, handle: str, url: str, scheme: str, response: httpx.Response) -> HandleResolution:
        status = response.status_code
        if not 200 <= status < 300:
            transient = status >= 500 or status in _TRANSIENT_STATUS
            return HandleResolution(handle, None, None, f"{url}: HTTP {status}", transient)
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return HandleResolution(handle, None, None, f"{url}: body is larger than {MAX_BODY_BYTES} bytes")
        try:
            did = body.decode("ascii").strip()
        except UnicodeDecodeError:
            did = ""
        if not is_did(did):
            return HandleResolution(handle, None, None, f"{url}: body is not a DID")
        return HandleResolution(handle, did, scheme, None)


def _redirect_target(current: httpx.URL, location: str, allow_insecure: bool) -> httpx.URL:
    try:
        joined = str(current.join(location))
    except httpx.InvalidURL as exc:
        raise UnsafeURL(f"redirect to an invalid URL: {exc}") from None
    try:
        return check_url(joined, allow_insecure=allow_insecure)
    except UnsafeURL as exc:
        raise UnsafeURL(f"redirect to {joined}: {exc.reason}") from None
