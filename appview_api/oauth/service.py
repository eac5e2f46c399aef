"""Web sign-in as one object built from settings: the client, its key, the sealer, sessions and sign-in.

What seals sessions is RELAY_SESSION_SECRET. A deployment without it cannot sign anyone in (and says so
on the sign-in page) rather than keep tokens that a copy of the database would hand over. On a loopback
URL (development) a secret is generated once and kept in the database instead, with a warning. The
confidential client's key is RELAY_OAUTH_CLIENT_KEY, or one generated once and kept in the database,
sealed.
"""

from __future__ import annotations

import base64
import logging
import secrets

import httpx
from joserfc.jwk import ECKey
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from appview_api.errors import NotFound, SignInUnavailable
from appview_api.oauth.accounts import Accounts
from appview_api.oauth.client import (
    JWKS_PATH,
    METADATA_PATH,
    OAuthClient,
    is_loopback,
    load_client_key,
    make_client,
    new_client_key,
)
from appview_api.oauth.dpop import Nonces
from appview_api.oauth.sealing import Sealer
from appview_api.oauth.sessions import Sessions
from appview_api.oauth.signin import SignIn
from appview_api.oauth.tokens import Tokens
from appview_api.xrpc import json_response
from indexer.config import Settings
from indexer.errors import ConfigError
from indexer.ingest.index import Index
from indexer.net.netguard import GuardedTransport
from indexer.net.outbound import Outbound

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 15.0
MAX_CONNECTIONS = 32
_SECRET_KEY = "web_session_secret"
_CLIENT_KEY = "oauth_client_key"
_CLIENT_KEY_CONTEXT = "oauth-client-key"


class OAuth:
    def __init__(self, settings: Settings, index: Index, outbound: Outbound) -> None:
        """`outbound`: the service's DNS, SSRF guard and DID documents (closed by its owner)."""
        allow_insecure = settings.net.allow_insecure
        transport = GuardedTransport(outbound.backend, max_connections=MAX_CONNECTIONS)
        self._http = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(TIMEOUT_SECONDS), trust_env=False)
        self.unavailable: str | None = None
        self.client: OAuthClient | None = None
        self._sign_in: SignIn | None = None
        self._sessions: Sessions | None = None
        base_url = settings.api.base_url
        secret = settings.web.session_secret
        if not secret and is_loopback(base_url):
            log.warning("RELAY_SESSION_SECRET is unset: sessions are sealed with a key kept in the database itself")
            secret = index.kept(_SECRET_KEY, lambda: secrets.token_hex(32))
        if not secret:
            self.unavailable = "sign-in is not set up on this server: its operator must set RELAY_SESSION_SECRET"
            log.warning("web sign-in unavailable: RELAY_SESSION_SECRET is unset")
            return
        sealer = Sealer(secret)
        try:
            key = None if is_loopback(base_url) else _client_key(settings.web.oauth_client_key, sealer, index)
            self.client = make_client(base_url, key)
        except ConfigError as exc:
            self.unavailable = f"sign-in is not set up on this server: {exc.reason}"
            log.error("web sign-in unavailable: %s", exc.reason)
            return
        nonces = Nonces()
        tokens = Tokens(self.client, self._http, nonces)
        identity = outbound.identity
        resolver_url = settings.web.handle_resolver_url
        accounts = Accounts(
            identity, outbound.handles, self._http, resolver_url=resolver_url, allow_insecure=allow_insecure
        )
        self._sessions = Sessions(index, sealer, tokens, nonces)
        self._sign_in = SignIn(
            self.client, accounts, self._http, tokens, self._sessions, index, sealer, allow_insecure=allow_insecure
        )

    @property
    def sign_in(self) -> SignIn:
        if self._sign_in is None:
            raise SignInUnavailable(self.unavailable or "sign-in is unavailable")
        return self._sign_in

    @property
    def sessions(self) -> Sessions | None:
        return self._sessions

    def routes(self) -> list[Route]:
        return [Route(METADATA_PATH, self._metadata), Route(JWKS_PATH, self._jwks)]

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _metadata(self, request: Request) -> Response:
        return json_response(self._confidential().metadata(), headers={"Cache-Control": "public, max-age=600"})

    async def _jwks(self, request: Request) -> Response:
        return json_response(self._confidential().jwks(), headers={"Cache-Control": "public, max-age=600"})

    def _confidential(self) -> OAuthClient:
        if self.client is None or not self.client.confidential:
            raise NotFound("this server signs people in as atproto's loopback development client: no metadata here")
        return self.client


def _client_key(configured: str, sealer: Sealer, index: Index) -> ECKey:
    if configured:
        return load_client_key(configured)

    def opened(stored: str) -> str | None:
        plain = sealer.open(base64.b64decode(stored), _CLIENT_KEY_CONTEXT)
        return None if plain is None else plain.decode()

    def make() -> str:
        log.info("generated the OAuth client's ES256 key; it is kept sealed in the database")
        return base64.b64encode(sealer.seal(new_client_key().encode(), _CLIENT_KEY_CONTEXT)).decode()

    stored = index.kept(_CLIENT_KEY, make, usable=lambda value: opened(value) is not None)
    plain = opened(stored)
    assert plain is not None  # kept() replaced anything unusable
    return load_client_key(plain)
