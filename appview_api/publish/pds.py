"""The caller's PDS: whose a bearer token is, and the record writes made with a session's credentials.

The token is the caller's own PDS access token. Its `sub` claim names a DID, but nothing here can check
the signature (only the PDS holds the key), so the claim is only a hint of where to ask: the DID document
(from the PLC directory, or did:web) names the account's PDS, and that PDS's getSession must accept the
token and answer the same DID. A forged token names a DID whose PDS refuses it; a genuine token from one
PDS that claims another account's DID is refused by that account's PDS or answers a different DID.

The PDS address comes from a DID document anyone can publish, so every request goes through the SSRF
guard (as audio checks do). The token travels only to that PDS and is never logged or stored.

A `Session` carries its `Credentials`: a bearer token (other apps, `relay-appview publish`) or a signed-in
person's DPoP-bound OAuth session (appview_api/oauth), which signs each request and refreshes itself.
The writes below are the same for both.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import orjson

from appview_api.errors import (
    AuthRequired,
    ExpiredToken,
    IdentityUnavailable,
    PdsBusy,
    PdsRejected,
    PdsUnavailable,
    RateLimited,
)
from appview_api.publish.ratelimit import RateLimiter
from indexer.atproto.nsid import TRACK_COLLECTION
from indexer.config import IdentitySettings
from indexer.errors import IdentityError, RelayError, UnsafeURL
from indexer.net.identity import Identity
from indexer.net.netguard import GuardedTransport, check_url
from indexer.net.outbound import Outbound

PDS_TIMEOUT_SECONDS = 30.0
MAX_CONNECTIONS = 32
_AUTH_ERRORS = frozenset({"AuthMissing", "AuthenticationRequired", "InvalidToken", "AccountTakedown"})


class PdsRefusal(RelayError):
    """The PDS answered a 4xx that is not about the token: callers decide what it means for them."""

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(reason)
        self.error = error

    def rejected(self) -> PdsRejected:
        return PdsRejected(f"the PDS refused the write: {self.error}: {self.reason}")


class Credentials(Protocol):
    async def send(self, http: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
        """Send `request` to the session's PDS with this session's authority."""
        ...


@dataclass(frozen=True)
class BearerToken:
    token: str = field(repr=False)

    async def send(self, http: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return await http.send(request)


@dataclass(frozen=True)
class Session:
    did: str
    handle: str | None
    pds_url: str
    credentials: Credentials = field(repr=False)


@dataclass(frozen=True)
class Written:
    uri: str
    cid: str
    rev: str | None  # None when the PDS found nothing to change and made no commit


@dataclass(frozen=True)
class StoredRecord:
    value: dict[str, Any]
    cid: str


def bearer_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthRequired("send 'Authorization: Bearer <your PDS access token>'")
    return token.strip()


def token_subject(token: str, now: float | None = None) -> str:
    """The DID the token claims (unverified: a hint), refusing one whose own `exp` has passed."""
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthRequired("the bearer token is not a JWT")
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        raise AuthRequired("the bearer token is not a JWT") from None
    subject = claims.get("sub") if isinstance(claims, dict) else None
    if not isinstance(subject, str) or not subject.startswith("did:"):
        raise AuthRequired("the bearer token names no DID")
    expires = claims.get("exp")
    if isinstance(expires, int | float) and expires < (time.time() if now is None else now):
        raise ExpiredToken()
    return subject


class Pds:
    def __init__(self, identity: IdentitySettings, outbound: Outbound) -> None:
        """`outbound`: the service's DNS, SSRF guard and DID documents (closed by its owner)."""
        self._allow_insecure = outbound.allow_insecure
        transport = GuardedTransport(outbound.backend, max_connections=MAX_CONNECTIONS)
        self._http = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(PDS_TIMEOUT_SECONDS), trust_env=False)
        self._identity = outbound.identity
        # The token is not checked until its DID document is: a stranger's forged tokens must not buy
        # unlimited fetches. Cached documents cost nothing; fetches are capped a minute, for all callers.
        self._lookups = RateLimiter(identity.unauthenticated_lookups_per_minute)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def authenticate(self, authorization: str | None) -> Session:
        token = bearer_token(authorization)
        did = token_subject(token)
        if not self._identity.cached(did):
            retry_after = self._lookups.acquire("")
            if retry_after is not None:
                raise RateLimited(retry_after, "identity lookups for unverified tokens")
        try:
            identity = await self._identity.resolve(did)
        except IdentityError as exc:
            if exc.transient:
                raise IdentityUnavailable(exc.reason) from None
            raise AuthRequired(f"cannot verify the token: {exc.reason}") from None
        if not identity.pds:
            raise AuthRequired(f"{did}: the DID document names no PDS")
        try:
            check_url(identity.pds, allow_insecure=self._allow_insecure)
        except UnsafeURL as exc:
            raise AuthRequired(f"{did}: the PDS {identity.pds[:200]!r} is refused: {exc.reason}") from None
        credentials = BearerToken(token)
        session = await self._call(identity.pds, "GET", "com.atproto.server.getSession", credentials=credentials)
        if session.get("did") != did:
            raise AuthRequired("the token's session belongs to another DID than the one it names")
        return Session(did, await self._shown_handle(identity), identity.pds, credentials)

    async def _shown_handle(self, identity: Identity) -> str | None:
        """The handle the index may show for the author: only one that resolves back to the DID. Not known
        just now, none: the indexer's handle lookups settle it later."""
        try:
            return await self._identity.verified_handle(identity)
        except IdentityError:
            return None

    async def get_record(self, session: Session, rkey: str) -> StoredRecord | None:
        params = {"repo": session.did, "collection": TRACK_COLLECTION, "rkey": rkey}
        try:
            body = await self._call(session.pds_url, "GET", "com.atproto.repo.getRecord", params=params)
        except PdsRefusal as exc:
            if exc.error == "RecordNotFound":
                return None
            raise
        value, cid = body.get("value"), body.get("cid")
        if not isinstance(value, dict) or not isinstance(cid, str):
            raise PdsUnavailable("the PDS answered getRecord without a value and cid")
        return StoredRecord(value, cid)

    async def put_record(
        self, session: Session, rkey: str, record: dict[str, Any], *, swap: str | None
    ) -> Written:
        """Write under `rkey` only if the current record's CID is `swap` (None: only if there is none)."""
        body = {
            "repo": session.did,
            "collection": TRACK_COLLECTION,
            "rkey": rkey,
            "record": record,
            "swapRecord": swap,
        }
        answer = await self._call(
            session.pds_url, "POST", "com.atproto.repo.putRecord", credentials=session.credentials, json=body
        )
        uri, cid = answer.get("uri"), answer.get("cid")
        if not isinstance(uri, str) or not isinstance(cid, str):
            raise PdsUnavailable("the PDS answered putRecord without a uri and cid")
        return Written(uri, cid, _rev(answer))

    async def delete_record(self, session: Session, rkey: str, *, swap: str) -> str | None:
        """The commit's rev, or None when there was nothing to delete."""
        body = {"repo": session.did, "collection": TRACK_COLLECTION, "rkey": rkey, "swapRecord": swap}
        answer = await self._call(
            session.pds_url, "POST", "com.atproto.repo.deleteRecord", credentials=session.credentials, json=body
        )
        return _rev(answer)

    async def _call(
        self,
        pds_url: str,
        method: str,
        nsid: str,
        *,
        credentials: Credentials | None = None,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        url = f"{pds_url.rstrip('/')}/xrpc/{nsid}"
        request = self._http.build_request(method, url, params=params, json=json)
        try:
            if credentials is None:
                response = await self._http.send(request)
            else:
                response = await credentials.send(self._http, request)
        except UnsafeURL as exc:
            raise PdsUnavailable(f"the PDS at {pds_url} is refused: {exc.reason}") from None
        except httpx.TimeoutException:
            raise PdsUnavailable(f"the PDS at {pds_url} timed out on {nsid}") from None
        except httpx.HTTPError as exc:
            raise PdsUnavailable(f"the PDS at {pds_url} is unreachable on {nsid}: {type(exc).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        if response.status_code == 200:
            return body
        error, message = str(body.get("error", "")), str(body.get("message", ""))[:300]
        if error == "ExpiredToken":
            raise ExpiredToken()
        if response.status_code == 401 or error in _AUTH_ERRORS:
            raise AuthRequired(f"the PDS refused the token: {error or response.status_code}")
        if response.status_code >= 500 or response.status_code == 429:
            error_class = PdsBusy if response.status_code == 503 else PdsUnavailable
            raise error_class(f"the PDS at {pds_url} answered {response.status_code} on {nsid}")
        raise PdsRefusal(error or f"HTTP {response.status_code}", message)


def _rev(answer: dict[str, Any]) -> str | None:
    commit = answer.get("commit")
    rev = commit.get("rev") if isinstance(commit, dict) else None
    return rev if isinstance(rev, str) else None
