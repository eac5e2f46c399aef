"""DID documents: where an account's claimed handle, PDS and signing key come from.

did:plc documents come from the configured PLC directory; did:web documents are fetched through the
SSRF-guarded client, since their host is whatever the DID says (a refusal is a definitive failure, never a
crash). Documents are cached: answers for `cache_seconds`, failures that will not change on retry for
`negative_seconds`, so a stranger repeating a DID costs one fetch; concurrent lookups of one DID share one
fetch; the cache holds at most `max_entries` DIDs. `resolve(did, fresh=True)` fetches anew (a signature that
fails may mean the key was rotated).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from atproto_core.did_doc import DidDocument

from indexer import metrics
from indexer.atproto.syntax import is_handle
from indexer.config import IdentitySettings
from indexer.errors import IdentityError, UnsafeURL
from indexer.net.handles import HandleResolver

log = logging.getLogger(__name__)
_PLC_DID = re.compile(r"did:plc:[a-z2-7]{24}")
_WEB_DID = re.compile(r"did:web:[a-zA-Z0-9.\-]+(%3A\d+)?")
MAX_DOCUMENT_BYTES = 64 * 1024
INVALID_HANDLE = "handle.invalid"  # shown for a handle that does not resolve back to its DID


@dataclass(frozen=True, slots=True)
class Identity:
    did: str
    handle: str | None  # what the document claims: shown only once it resolves back (indexer/net/handles.py)
    pds: str | None
    document: Mapping[str, Any] = field(repr=False)  # the JSON, for the signing key


class IdentityResolver:
    def __init__(
        self,
        plc_url: str,
        plc_client: httpx.AsyncClient,
        web_client: httpx.AsyncClient,
        *,
        cache_seconds: float = 3600.0,
        negative_seconds: float = 60.0,
        max_entries: int = 10_000,
        handles: HandleResolver | None = None,
    ) -> None:
        """`handles`: to check that a document's handle resolves back to its DID before it is shown."""
        self._plc_url = plc_url.rstrip("/")
        self._plc = plc_client
        self._web = web_client
        self._cache_seconds = cache_seconds
        self._negative_seconds = negative_seconds
        self._max_entries = max_entries
        self._handles = handles
        self._cache: OrderedDict[str, tuple[float, Identity | IdentityError]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[Identity]] = {}
        self.fetches = 0  # documents actually fetched: what strangers can make us spend

    @classmethod
    def from_settings(
        cls,
        settings: IdentitySettings,
        plc_client: httpx.AsyncClient,
        web_client: httpx.AsyncClient,
        handles: HandleResolver | None = None,
    ) -> IdentityResolver:
        return cls(
            settings.plc_url,
            plc_client,
            web_client,
            cache_seconds=settings.cache_seconds,
            negative_seconds=settings.negative_cache_seconds,
            handles=handles,
        )

    def cached(self, did: str) -> bool:
        """Whether `resolve(did)` would answer without a fetch."""
        entry = self._cache.get(did)
        return (entry is not None and entry[0] > time.monotonic()) or did in self._inflight

    async def resolve(self, did: str, *, fresh: bool = False) -> Identity:
        """The checked document, from the cache unless `fresh`; IdentityError with the reason otherwise."""
        if not fresh:
            entry = self._cache.get(did)
            if entry is not None and entry[0] > time.monotonic():
                self._cache.move_to_end(did)
                if isinstance(entry[1], IdentityError):
                    raise entry[1]
                return entry[1]
        pending = self._inflight.get(did)
        if pending is None:
            pending = self._inflight[did] = asyncio.ensure_future(self._fetch_and_keep(did))
            pending.add_done_callback(lambda _: self._inflight.pop(did, None))
        return await asyncio.shield(pending)

    async def _fetch_and_keep(self, did: str) -> Identity:
        try:
            identity = await self._fetch(did)
        except IdentityError as exc:
            if not exc.transient:
                self._keep(did, exc, self._negative_seconds)
            raise
        self._keep(did, identity, self._cache_seconds)
        return identity

    def _keep(self, did: str, answer: Identity | IdentityError, seconds: float) -> None:
        self._cache[did] = (time.monotonic() + seconds, answer)
        self._cache.move_to_end(did)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)

    async def _fetch(self, did: str) -> Identity:
        if _PLC_DID.fullmatch(did):
            client, url = self._plc, f"{self._plc_url}/{did}"
        elif _WEB_DID.fullmatch(did):
            host = did.removeprefix("did:web:").replace("%3A", ":")
            client, url = self._web, f"https://{host}/.well-known/did.json"
        else:
            raise IdentityError(f"{did[:100]}: not a did:plc or did:web identifier")
        self.fetches += 1
        try:
            body = await _get_capped(client, url, did)
        except UnsafeURL as exc:
            raise IdentityError(f"{did}: the DID document's host is refused: {exc.reason}") from None
        except httpx.HTTPError as exc:
            raise IdentityError(f"{did}: DID document unreachable: {type(exc).__name__}", transient=True) from None
        try:
            raw = orjson.loads(body)
            document = DidDocument.from_dict(raw)
        except Exception as exc:
            raise IdentityError(f"{did}: malformed DID document: {str(exc)[:200]}") from None
        if document.id != did:
            raise IdentityError(f"{did}: document is for {str(document.id)[:100]}")
        handle = document.get_handle()
        if handle is not None:
            handle = handle.lower()
            if not is_handle(handle):
                handle = None
        return Identity(did, handle, document.get_pds_endpoint(), raw)

    async def verified_handle(self, identity: Identity) -> str | None:
        """The handle to show for a document: its claim if the handle resolves back to the DID, else
        `handle.invalid` (Bluesky's convention); None when it claims none. IdentityError (transient) when
        the answer may change on retry."""
        if identity.handle is None or self._handles is None:
            return identity.handle
        resolution = await self._handles.resolve(identity.handle)
        if resolution.confirms(identity.did):
            metrics.HANDLES.labels(outcome="verified").inc()
            return identity.handle
        if resolution.transient:
            metrics.HANDLES.labels(outcome="unavailable").inc()
            raise IdentityError(f"{identity.handle}: {resolution.reason}", transient=True)
        metrics.HANDLES.labels(outcome="invalid").inc()
        log.info(
            "handle does not resolve back did=%s handle=%s reason=%s", identity.did, identity.handle, resolution.reason
        )
        return INVALID_HANDLE

    async def lookup_handle(self, did: str) -> tuple[str, str | None] | None:
        """For the handle queue: None when the answer may change on retry (the stored handle stays);
        a definitive failure (no such DID, bad document, a refused host) clears the handle rather than
        keep a stale one, and is recorded, so a restart does not ask again."""
        try:
            # Fresh: an identity event says the document may have changed (a new handle, a new key).
            return did, await self.verified_handle(await self.resolve(did, fresh=True))
        except IdentityError as exc:
            log.info("handle lookup failed did=%s transient=%s reason=%s", did, exc.transient, exc.reason)
            return None if exc.transient else (did, None)


async def _get_capped(client: httpx.AsyncClient, url: str, did: str) -> bytes:
    """The body of a 200, read no further than MAX_DOCUMENT_BYTES: a document host is a stranger."""
    async with client.stream("GET", url) as response:
        if response.status_code != 200:
            transient = response.status_code >= 500 or response.status_code == 429
            raise IdentityError(f"{did}: DID document fetch answered {response.status_code}", transient=transient)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body.extend(chunk)
            if len(body) > MAX_DOCUMENT_BYTES:
                raise IdentityError(f"{did}: DID document is over {MAX_DOCUMENT_BYTES} bytes")
    return bytes(body)
