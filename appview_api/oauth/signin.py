"""Signing in, as the atproto OAuth profile describes it, from what the person typed to a stored session.

`begin`: the account's PDS and its authorization server are found and checked (`accounts.py`,
`metadata.py`); a fresh DPoP key, a PKCE verifier (S256) and a `state` are made; the request is pushed
(PAR), DPoP-signed and authenticated; the person is then sent to the authorization server with only the
request_uri. What the callback will need is kept sealed in the database for ten minutes, under a hash of
the state, together with a hash of a secret only this browser holds (a cookie), so a callback URL carried
to another browser (login CSRF) completes nothing.

`complete`: the state must name a sign-in in flight (each completes once), the browser must be the one
that began it, `iss` must be the server it was sent to, and only then is the code exchanged. The grant
must be a DPoP token with our scope (`tokens.py`), for the DID that was asked for; and whoever the token
names, that DID's own document must point to a PDS served by this same authorization server, or a
server could sign anyone in as anyone. A grant refused after issue is revoked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson

from appview_api.errors import RequestError, SignInFailed
from appview_api.oauth.accounts import Accounts
from appview_api.oauth.client import SCOPE, OAuthClient
from appview_api.oauth.dpop import DpopKey
from appview_api.oauth.metadata import AuthServer, discover
from appview_api.oauth.sealing import Sealer
from appview_api.oauth.sessions import OAuthSession, Sessions
from appview_api.oauth.tokens import Grant, Tokens
from indexer.ingest.index import Index

log = logging.getLogger(__name__)

PENDING_SECONDS = 600
_CONTEXT = "oauth-request:"


@dataclass(frozen=True)
class Started:
    authorize_url: str
    browser_secret: str  # for the browser's sign-in cookie


@dataclass(frozen=True)
class Pending:
    issuer: str
    token_endpoint: str
    revocation_endpoint: str | None
    pds_url: str
    did: str | None
    verifier: str
    dpop: dict[str, Any]
    return_to: str
    browser: str  # sha256 of the browser's secret


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def pkce_challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class SignIn:
    def __init__(
        self,
        client: OAuthClient,
        accounts: Accounts,
        http: httpx.AsyncClient,
        tokens: Tokens,
        sessions: Sessions,
        index: Index,
        sealer: Sealer,
        *,
        allow_insecure: bool,
    ) -> None:
        self._client = client
        self._accounts = accounts
        self._http = http
        self._tokens = tokens
        self._sessions = sessions
        self._index = index
        self._sealer = sealer
        self._allow_insecure = allow_insecure

    async def begin(self, text: str, return_to: str) -> Started:
        target = await self._accounts.locate(text)
        server = await self._server(target.pds_url)
        key = DpopKey.generate()
        verifier = secrets.token_urlsafe(48)
        state = secrets.token_urlsafe(24)
        browser_secret = secrets.token_urlsafe(24)
        form = {
            "response_type": "code",
            "redirect_uri": self._client.redirect_uri,
            "scope": SCOPE,
            "state": state,
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
        if target.login_hint is not None:
            form["login_hint"] = target.login_hint
        answer = await self._tokens.post(server.issuer, server.par_endpoint, key, form)
        request_uri = answer.get("request_uri")
        if not isinstance(request_uri, str) or not request_uri:
            raise SignInFailed(f"the authorization server {server.issuer} answered PAR without a request_uri")
        pending = Pending(
            server.issuer,
            server.token_endpoint,
            server.revocation_endpoint,
            target.pds_url,
            target.did,
            verifier,
            key.to_jwk(),
            return_to,
            _sha256(browser_secret),
        )
        row = _sha256(state)
        sealed = self._sealer.seal(orjson.dumps(asdict(pending)), _CONTEXT + row)
        await self._index.save_oauth_request(row, sealed, int((time.time() + PENDING_SECONDS) * 1_000_000))
        query = urlencode({"client_id": self._client.client_id, "request_uri": request_uri})
        log.info("sign-in started issuer=%s did=%s", server.issuer, target.did)
        return Started(f"{server.authorization_endpoint}?{query}", browser_secret)

    async def complete(self, params: Mapping[str, str], browser_secret: str | None) -> tuple[str, str]:
        """(session id, return path) once the callback's answer checks out; SignInFailed says why not."""
        pending = await self._pending(params.get("state"))
        if browser_secret is None or not hmac.compare_digest(_sha256(browser_secret), pending.browser):
            raise SignInFailed("this sign-in was started in another browser (or its cookie expired): start again")
        issuer = params.get("iss")
        if issuer != pending.issuer:
            raise SignInFailed(f"the answer comes from issuer {str(issuer)[:200]!r}, not {pending.issuer}")
        if "error" in params:
            description = params.get("error_description", "")[:300]
            raise SignInFailed(f"the authorization server refused: {params['error'][:100]}: {description}")
        code = params.get("code")
        if not code:
            raise SignInFailed("the answer carries no authorization code")
        key = DpopKey.from_jwk(pending.dpop)
        grant = await self._tokens.exchange(
            pending.issuer, pending.token_endpoint, key, code=code, verifier=pending.verifier
        )
        try:
            handle, pds_url = await self._check_subject(grant, pending)
        except RequestError:
            await self._revoke(pending, key, grant)
            raise
        session = OAuthSession(
            grant.sub,
            handle,
            pds_url,
            pending.issuer,
            pending.token_endpoint,
            pending.revocation_endpoint,
            key,
            grant.access_token,
            grant.refresh_token,
            grant.expires_at,
            grant.scope,
        )
        log.info("signed in did=%s issuer=%s", grant.sub, pending.issuer)
        return await self._sessions.start(session), pending.return_to

    async def _pending(self, state: str | None) -> Pending:
        if not state:
            raise SignInFailed("the answer carries no state")
        row = _sha256(state)
        sealed = await self._index.take_oauth_request(row)
        plain = None if sealed is None else self._sealer.open(sealed, _CONTEXT + row)
        if plain is None:
            raise SignInFailed("this sign-in is unknown, already used or expired: start again")
        return Pending(**orjson.loads(plain))

    async def _check_subject(self, grant: Grant, pending: Pending) -> tuple[str | None, str]:
        """(handle, PDS URL) of the DID the grant is for, once it checks out."""
        if pending.did is not None and grant.sub != pending.did:
            raise SignInFailed(f"you signed in as {grant.sub}, but the sign-in was for {pending.did}")
        identity = await self._accounts.identity(grant.sub)
        pds_url = self._accounts.pds(identity)
        if pds_url.rstrip("/") != pending.pds_url.rstrip("/"):
            server = await self._server(pds_url)
            if server.issuer != pending.issuer:
                raise SignInFailed(
                    f"{grant.sub}'s PDS is served by {server.issuer}, not by {pending.issuer}, which signed you in"
                )
        return identity.handle, pds_url

    async def _server(self, pds_url: str) -> AuthServer:
        return await discover(
            self._http, pds_url, auth_method=self._client.auth_method, allow_insecure=self._allow_insecure
        )

    async def _revoke(self, pending: Pending, key: DpopKey, grant: Grant) -> None:
        if pending.revocation_endpoint is None:
            return
        try:
            await self._tokens.revoke(pending.issuer, pending.revocation_endpoint, key, grant.refresh_token)
        except RequestError as exc:
            log.warning("revoking a refused grant failed did=%s reason=%s", grant.sub, exc.reason)
