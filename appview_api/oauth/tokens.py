"""The authorization server's token endpoint: codes and refresh tokens in, checked grants out; revocation.

Every request is DPoP-signed with the session's key (so the tokens are bound to it) and carries this
client's authentication. A grant is accepted only as the atproto profile requires: a DPoP token, for a
DID, with the `atproto` scope and write access to `app.relay.track` (see `covers_scope`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from appview_api.errors import AuthRequired, PdsUnavailable, SignInFailed
from appview_api.oauth import dpop
from appview_api.oauth.client import OAuthClient
from appview_api.oauth.dpop import DpopKey, Nonces
from indexer.atproto.nsid import TRACK_COLLECTION
from indexer.atproto.syntax import is_did
from indexer.errors import UnsafeURL

WRITES = frozenset({"create", "update", "delete"})
DEFAULT_EXPIRES_SECONDS = 300


@dataclass(frozen=True)
class Grant:
    sub: str
    scope: str
    access_token: str
    refresh_token: str
    expires_at: float


class TokenRefused(SignInFailed):
    """The token endpoint answered an OAuth error (`error` holds its code, e.g. invalid_grant)."""

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(reason)
        self.error = error


def covers_scope(scope: str) -> bool:
    """Does `scope` hold `atproto` and a repo permission to create, update and delete our records?

    Granular permissions look like `repo:app.relay.track` (every action) or
    `repo:app.relay.track?action=create&action=update`; `repo:*` covers every collection.
    """
    tokens = scope.split()
    if "atproto" not in tokens:
        return False
    allowed: set[str] = set()
    for token in tokens:
        if not token.startswith("repo:"):
            continue
        collection, _, query = token.removeprefix("repo:").partition("?")
        if collection not in (TRACK_COLLECTION, "*"):
            continue
        actions = {value for name, _, value in (p.partition("=") for p in query.split("&") if p) if name == "action"}
        allowed |= actions or WRITES
    return allowed >= WRITES


def check_grant(body: Any) -> Grant:
    if not isinstance(body, dict):
        raise SignInFailed("the token endpoint answered something other than a JSON object")
    if str(body.get("token_type", "")).lower() != "dpop":
        raise SignInFailed(f"the token endpoint issued a {str(body.get('token_type'))[:50]!r} token, not a DPoP one")
    sub, scope = body.get("sub"), body.get("scope")
    access, refresh = body.get("access_token"), body.get("refresh_token")
    if not isinstance(sub, str) or not is_did(sub):
        raise SignInFailed("the token endpoint named no DID (sub)")
    if not isinstance(access, str) or not access or not isinstance(refresh, str) or not refresh:
        raise SignInFailed("the token endpoint issued no access and refresh tokens")
    if not isinstance(scope, str) or not covers_scope(scope):
        raise SignInFailed(
            f"the permission granted ({str(scope)[:200]!r}) does not include writing tracks "
            f"(repo:{TRACK_COLLECTION}): sign in again and allow it"
        )
    expires_in = body.get("expires_in")
    seconds = expires_in if isinstance(expires_in, int) and expires_in > 0 else DEFAULT_EXPIRES_SECONDS
    return Grant(sub, scope, access, refresh, time.time() + seconds)


class Tokens:
    def __init__(self, client: OAuthClient, http: httpx.AsyncClient, nonces: Nonces) -> None:
        self._client = client
        self._http = http
        self._nonces = nonces

    async def exchange(
        self, issuer: str, endpoint: str, key: DpopKey, *, code: str, verifier: str
    ) -> Grant:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._client.redirect_uri,
            "code_verifier": verifier,
        }
        return check_grant(await self.post(issuer, endpoint, key, form))

    async def refresh(self, issuer: str, endpoint: str, key: DpopKey, refresh_token: str) -> Grant:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        try:
            return check_grant(await self.post(issuer, endpoint, key, form))
        except TokenRefused as exc:
            if exc.error == "invalid_grant":  # expired, revoked, or replayed: the session is over
                raise AuthRequired(f"your sign-in has ended ({exc.reason}): sign in again") from None
            raise

    async def revoke(self, issuer: str, endpoint: str, key: DpopKey, token: str) -> None:
        await self.post(issuer, endpoint, key, {"token": token}, expect_body=False)

    async def post(
        self, issuer: str, endpoint: str, key: DpopKey, form: dict[str, str], *, expect_body: bool = True
    ) -> dict[str, Any]:
        """POST a form to one of the issuer's endpoints (PAR, token, revoke) with a proof and client auth."""
        request = self._http.build_request("POST", endpoint, data=form | self._client.authentication(issuer))
        try:
            response = await dpop.send(self._http, request, key, self._nonces)
        except UnsafeURL as exc:
            raise SignInFailed(f"the authorization server at {endpoint[:200]} is refused: {exc.reason}") from None
        except httpx.HTTPError as exc:
            raise PdsUnavailable(
                f"the authorization server at {endpoint[:200]} is unreachable: {type(exc).__name__}"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code in (200, 201) and (isinstance(body, dict) or not expect_body):
            return body if isinstance(body, dict) else {}
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            error = body["error"][:100]
            description = str(body.get("error_description", ""))[:300]
            raise TokenRefused(error, f"the authorization server refused: {error}: {description}")
        if response.status_code >= 500:
            raise PdsUnavailable(f"the authorization server at {endpoint[:200]} answered HTTP {response.status_code}")
        raise SignInFailed(f"the authorization server at {endpoint[:200]} answered HTTP {response.status_code}")
