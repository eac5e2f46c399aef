"""Signed-in sessions: durable, sealed, refreshed under a lock, and the credentials PDS calls are made with.

The browser holds only a random session id. The database holds, under the id's SHA-256, the session
sealed (see `sealing.py`): the DID and PDS, the authorization server's endpoints, the DPoP key and the
tokens. A copy lives in memory so a signed-in page costs no database read; this process is the only
writer of sessions, so the copy cannot go stale.

Refresh tokens are single-use: two requests refreshing the same session at once would see one succeed
and the other burn the session ("Refresh token replayed"). So a refresh runs under the session's lock,
and whoever waited on it takes the tokens the first one stored instead of refreshing again. (One process
serves the API; a second one would need the lock in the database.)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import httpx
import orjson

from appview_api.errors import AuthRequired, RequestError
from appview_api.oauth import dpop
from appview_api.oauth.dpop import DpopKey, Nonces
from appview_api.oauth.sealing import Sealer
from appview_api.oauth.tokens import Grant, Tokens
from indexer.ingest.index import Index
from indexer.slots import KeyedSlots

log = logging.getLogger(__name__)

REFRESH_MARGIN_SECONDS = 60.0  # refresh a token this close to its expiry rather than risk a 401 mid-upload
IDLE_SECONDS = 180 * 86400  # the longest an authorization server keeps a refresh token alive
MAX_CACHED = 10_000
_CONTEXT = "oauth-session:"


@dataclass(frozen=True)
class OAuthSession:
    did: str
    handle: str | None
    pds_url: str
    issuer: str
    token_endpoint: str
    revocation_endpoint: str | None
    dpop: DpopKey
    access_token: str
    refresh_token: str
    expires_at: float
    scope: str

    def to_json(self) -> bytes:
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "dpop"}
        return orjson.dumps(fields | {"dpop": self.dpop.to_jwk()})

    @classmethod
    def from_json(cls, data: bytes) -> OAuthSession:
        fields: dict[str, Any] = orjson.loads(data)
        return cls(**(fields | {"dpop": DpopKey.from_jwk(fields["dpop"])}))

    def with_grant(self, grant: Grant) -> OAuthSession:
        return replace(
            self,
            access_token=grant.access_token,
            refresh_token=grant.refresh_token,
            expires_at=grant.expires_at,
            scope=grant.scope,
        )


def row_key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    def __init__(self, index: Index, sealer: Sealer, tokens: Tokens, nonces: Nonces) -> None:
        self._index = index
        self._sealer = sealer
        self._tokens = tokens
        self.nonces = nonces
        self._cache: OrderedDict[str, OAuthSession] = OrderedDict()
        self._locks: KeyedSlots[str] = KeyedSlots()

    async def start(self, session: OAuthSession) -> str:
        """Store a new session; the id returned is for the browser's cookie and nowhere else."""
        session_id = secrets.token_urlsafe(32)
        await self._save(row_key(session_id), session)
        await self._index.purge_oauth(int((time.time() - IDLE_SECONDS) * 1_000_000))
        return session_id

    async def get(self, session_id: str) -> OAuthSession | None:
        key = row_key(session_id)
        session = self._cache.get(key)
        if session is None:
            sealed = await asyncio.to_thread(self._index.oauth_session, key)
            plain = None if sealed is None else self._sealer.open(sealed, _CONTEXT + key)
            if plain is None:
                return None  # unknown, or sealed under a secret that has since changed
            session = self._remember(key, OAuthSession.from_json(plain))
        self._cache.move_to_end(key)
        return session

    async def fresh(self, session_id: str, *, rejected: str | None = None) -> OAuthSession:
        """The session with an access token good for a while; `rejected`: a token the PDS just refused."""
        session = await self.get(session_id)
        if session is None:
            raise AuthRequired("you are not signed in")
        if not _needs_refresh(session, rejected):
            return session
        key = row_key(session_id)
        async with self._locks.hold(key):
            session = await self.get(session_id)
            if session is None:
                raise AuthRequired("you are not signed in")
            if not _needs_refresh(session, rejected):
                return session  # refreshed by whoever held the lock before us
            try:
                grant = await self._tokens.refresh(
                    session.issuer, session.token_endpoint, session.dpop, session.refresh_token
                )
            except AuthRequired:
                await self.forget(session_id)
                raise
            if grant.sub != session.did:
                await self.forget(session_id)
                raise AuthRequired("the authorization server refreshed the session for another account")
            session = session.with_grant(grant)
            await self._save(key, session)
            log.info("session refreshed did=%s", session.did)
            return session

    async def end(self, session_id: str) -> None:
        """Sign out: revoke the tokens at the authorization server (best effort), then forget the session."""
        session = await self.get(session_id)
        if session is not None and session.revocation_endpoint is not None:
            for token in (session.refresh_token, session.access_token):
                try:
                    await self._tokens.revoke(session.issuer, session.revocation_endpoint, session.dpop, token)
                except RequestError as exc:
                    log.warning("token revocation failed did=%s reason=%s", session.did, exc.reason)
        await self.forget(session_id)

    async def forget(self, session_id: str) -> None:
        key = row_key(session_id)
        self._cache.pop(key, None)
        await self._index.delete_oauth_session(key)

    def credentials(self, session_id: str) -> DpopCredentials:
        return DpopCredentials(self, session_id)

    async def _save(self, key: str, session: OAuthSession) -> None:
        sealed = self._sealer.seal(session.to_json(), _CONTEXT + key)
        await self._index.save_oauth_session(key, session.did, sealed)
        self._remember(key, session)

    def _remember(self, key: str, session: OAuthSession) -> OAuthSession:
        self._cache[key] = session
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)
        return session


class DpopCredentials:
    """A session's authority over PDS calls (publish.pds.Credentials): DPoP-bound, refreshed as needed."""

    def __init__(self, sessions: Sessions, session_id: str) -> None:
        self._sessions = sessions
        self._session_id = session_id

    async def send(self, http: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
        session = await self._sessions.fresh(self._session_id)
        response = await self._send(http, request, session)
        if response.status_code == 401 and _token_refused(response):
            session = await self._sessions.fresh(self._session_id, rejected=session.access_token)
            response = await self._send(http, request, session)
        return response

    async def _send(self, http: httpx.AsyncClient, request: httpx.Request, session: OAuthSession) -> httpx.Response:
        request.headers["Authorization"] = f"DPoP {session.access_token}"
        return await dpop.send(http, request, session.dpop, self._sessions.nonces, session.access_token)


def _needs_refresh(session: OAuthSession, rejected: str | None) -> bool:
    if rejected is not None:
        return session.access_token == rejected
    return session.expires_at - REFRESH_MARGIN_SECONDS <= time.time()


def _token_refused(response: httpx.Response) -> bool:
    """A resource server's 401 for the token itself (expired, revoked), not for a missing nonce."""
    challenge = response.headers.get("WWW-Authenticate", "")
    return "invalid_token" in challenge and "use_dpop_nonce" not in challenge
