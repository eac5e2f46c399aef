"""The service's outbound network, built once from settings: one DNS resolver, the SSRF guard over it, a
guarded client, DID documents and handles. Every name the service looks up (audio hosts, PDS hosts, did:web
hosts, handles) goes through the one resolver that RELAY_DNS_NAMESERVERS can point at."""

from __future__ import annotations

import httpx

from indexer.config import Settings
from indexer.net.handles import HandleResolver
from indexer.net.identity import IdentityResolver
from indexer.net.netguard import GuardedBackend, GuardedTransport
from indexer.net.resolver import DnsResolver


class Outbound:
    def __init__(self, settings: Settings, *, max_connections: int = 32) -> None:
        net, identity = settings.net, settings.identity
        self.allow_insecure = net.allow_insecure
        self.dns = DnsResolver.from_settings(net, timeout=identity.timeout_seconds)
        self.backend = GuardedBackend(allow_loopback=net.allow_insecure, resolver=self.dns)
        timeout = httpx.Timeout(identity.timeout_seconds)
        # A stranger's hosts (PDSes, did:web, handles' web hosts) only ever through the guard. The PLC
        # directory is the operator's choice, so it is not.
        self.web = httpx.AsyncClient(
            transport=GuardedTransport(self.backend, max_connections=max_connections), timeout=timeout, trust_env=False
        )
        self._plc = httpx.AsyncClient(timeout=timeout, trust_env=False)
        self.handles = HandleResolver(net, self.dns, timeout_seconds=identity.timeout_seconds)
        self.identity = IdentityResolver.from_settings(identity, self._plc, self.web, handles=self.handles)

    async def aclose(self) -> None:
        await self.web.aclose()
        await self._plc.aclose()
        await self.handles.aclose()
