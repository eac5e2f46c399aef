"""What a person types to sign in (a handle, a DID or their PDS's URL), turned into where to send them.

A handle is resolved to a DID, and counts only if that DID's document claims the handle back. Handles are
resolved as the indexer resolves them (`indexer/net/handles.py`: DNS TXT `_atproto.<handle>`, else
`https://<handle>/.well-known/atproto-did` through the SSRF guard) or, when RELAY_HANDLE_RESOLVER_URL names
one, by that service's `com.atproto.identity.resolveHandle` (a development fallback). A DID is resolved to
its document, which names the PDS. A PDS URL is taken as given: who signed in is learned from the token,
and checked against that DID's own document then (see `signin.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import orjson

from appview_api.errors import IdentityUnavailable, SignInFailed
from appview_api.oauth.fetch import checked_url, get_text
from indexer.atproto.syntax import is_did, is_handle
from indexer.errors import IdentityError
from indexer.net.handles import HandleResolver
from indexer.net.identity import Identity, IdentityResolver

MAX_INPUT = 2048


@dataclass(frozen=True)
class Target:
    pds_url: str
    did: str | None  # who must sign in; None when only the PDS is known
    login_hint: str | None


class Accounts:
    def __init__(
        self,
        identity: IdentityResolver,
        handles: HandleResolver,
        http: httpx.AsyncClient,
        *,
        resolver_url: str,
        allow_insecure: bool,
    ) -> None:
        self._identity = identity
        self._handles = handles
        self._http = http
        self._resolver_url = resolver_url.rstrip("/")
        self._allow_insecure = allow_insecure

    async def locate(self, text: str) -> Target:
        text = text.strip()
        if not text or len(text) > MAX_INPUT:
            raise SignInFailed("enter your handle (like alice.example.com), your DID or your PDS's URL")
        if text.startswith(("https://", "http://")):
            return Target(checked_url(text, "the PDS URL", allow_insecure=self._allow_insecure), None, None)
        if text.startswith("did:"):
            if not is_did(text):
                raise SignInFailed(f"{text[:200]!r} is not a valid DID")
            return Target(self.pds(await self.identity(text)), text, text)
        handle = text.removeprefix("@").lower()
        if not is_handle(handle):
            raise SignInFailed(f"{text[:200]!r} is not a handle, a DID or an http(s) URL")
        did = await self.resolve_handle(handle)
        identity = await self.identity(did)
        if identity.handle != handle:
            raise SignInFailed(f"{handle} resolves to {did}, whose DID document does not claim {handle}")
        return Target(self.pds(identity), did, handle)

    async def resolve_handle(self, handle: str) -> str:
        if not self._resolver_url:
            resolution = await self._handles.resolve(handle)
            if resolution.did is not None:
                return resolution.did
            if resolution.transient:
                raise IdentityUnavailable(f"the handle {handle} cannot be resolved just now ({resolution.reason})")
            raise SignInFailed(f"the handle {handle} does not resolve to a DID ({resolution.reason})")
        # The handle's syntax is checked: it can go into the URL as it is.
        url = f"{self._resolver_url}/xrpc/com.atproto.identity.resolveHandle?handle={handle}"
        status, text = await get_text(self._http, url, f"the handle {handle}")
        if status >= 500:
            raise IdentityUnavailable(f"the handle {handle} cannot be resolved just now (HTTP {status})")
        did = _did_in(text) if status == 200 else None
        if did is None:
            raise SignInFailed(f"the handle {handle} does not resolve to a DID")
        return did

    async def identity(self, did: str) -> Identity:
        try:
            return await self._identity.resolve(did)
        except IdentityError as exc:
            if exc.transient:
                raise IdentityUnavailable(exc.reason) from None
            raise SignInFailed(exc.reason) from None

    def pds(self, identity: Identity) -> str:
        if not identity.pds:
            raise SignInFailed(f"the DID document of {identity.did} names no PDS")
        return checked_url(identity.pds, f"the PDS of {identity.did}", allow_insecure=self._allow_insecure)


def _did_in(text: str) -> str | None:
    """The DID in a resolveHandle answer (`{"did": ...}`)."""
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    did = body.get("did") if isinstance(body, dict) else None
    return did if isinstance(did, str) and is_did(did) else None
