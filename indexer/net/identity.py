"""DID documents: where an account's handle (and PDS) comes from.

Jetstream's identity events often lack the handle and are unsigned anyway, so the handle we show is the
one the account's DID document claims. did:plc documents come from the configured PLC directory;
did:web documents are fetched through the SSRF-guarded client, since their host is whatever the DID says.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import httpx
from atproto_client.models.string_formats import is_valid_handle
from atproto_core.did_doc import DidDocument

from indexer.errors import IdentityError

log = logging.getLogger(__name__)
_PLC_DID = re.compile(r"did:plc:[a-z2-7]{24}")
_WEB_DID = re.compile(r"did:web:[a-zA-Z0-9.\-]+(%3A\d+)?")


@dataclass(frozen=True, slots=True)
class Identity:
    did: str
    handle: str | None
    pds: str | None


class IdentityResolver:
    def __init__(self, plc_url: str, plc_client: httpx.AsyncClient, web_client: httpx.AsyncClient) -> None:
        self._plc_url = plc_url.rstrip("/")
        self._plc = plc_client
        self._web = web_client

    async def resolve(self, did: str) -> Identity:
        """Fetch and check the DID document; raise IdentityError with the reason otherwise."""
        if _PLC_DID.fullmatch(did):
            client, url = self._plc, f"{self._plc_url}/{did}"
        elif _WEB_DID.fullmatch(did):
            host = did.removeprefix("did:web:").replace("%3A", ":")
            client, url = self._web, f"https://{host}/.well-known/did.json"
        else:
            raise IdentityError(f"{did}: not a did:plc or did:web identifier")
        try:
            response = await client.get(url)
        except httpx.HTTPError as exc:
            raise IdentityError(f"{did}: DID document unreachable: {type(exc).__name__}", transient=True) from None
        if response.status_code != 200:
            transient = response.status_code >= 500 or response.status_code == 429
            raise IdentityError(f"{did}: DID document fetch answered {response.status_code}", transient=transient)
        try:
            document = DidDocument.from_dict(response.json())
        except Exception as exc:
            raise IdentityError(f"{did}: malformed DID document: {exc}") from None
        if document.id != did:
            raise IdentityError(f"{did}: document is for {document.id}")
        handle = document.get_handle()
        if handle is not None:
            handle = handle.lower()
            if not is_valid_handle(handle):
                handle = None
        return Identity(did, handle, document.get_pds_endpoint())

    async def lookup_handle(self, did: str) -> tuple[str, str | None] | None:
        """For the handle queue: None when the answer may change on retry (the stored handle stays);
        a definitive failure (no such DID, bad document) clears the handle rather than keep a stale one."""
        try:
            return did, (await self.resolve(did)).handle
        except IdentityError as exc:
            log.info("handle lookup failed did=%s transient=%s reason=%s", did, exc.transient, exc.reason)
            return None if exc.transient else (did, None)
