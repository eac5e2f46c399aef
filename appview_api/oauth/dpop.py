"""DPoP (RFC 9449) as atproto OAuth uses it: ES256 proofs, and the servers' nonces.

Every token request and every PDS call carries a proof signed with the session's own key, so a stolen
access token is useless without that key. Servers demand a nonce they chose in each proof and rotate it
(atproto: at most every 5 minutes; the reference PDS every minute). A server that wants a newer one
refuses the request and sends the nonce in `DPoP-Nonce`: the request is then signed again with it and
sent once more. Nonces are kept per origin, since the authorization server and the PDS each keep their own.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections import OrderedDict
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from indexer.errors import ConfigError

ALGORITHM = "ES256"
MAX_NONCES = 4096


def b64url_sha256(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()


def htu(url: str | httpx.URL) -> str:
    """The proof's `htu`: the request URL without its query or fragment (RFC 9449 section 4.2)."""
    return str(httpx.URL(str(url)).copy_with(query=None, fragment=None))


class DpopKey:
    """A session's P-256 key: it signs every proof, and its thumbprint is what access tokens are bound to."""

    def __init__(self, key: ECKey) -> None:
        self._key = key
        self._public = key.as_dict(private=False)

    @classmethod
    def generate(cls) -> DpopKey:
        return cls(ECKey.generate_key("P-256", private=True))

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any]) -> DpopKey:
        try:
            key = ECKey.import_key(jwk)
        except (JoseError, ValueError) as exc:
            raise ConfigError(f"a stored DPoP key is not a P-256 key: {exc}") from None
        return cls(key)

    def to_jwk(self) -> dict[str, Any]:
        return dict(self._key.as_dict(private=True))

    def proof(self, method: str, url: str | httpx.URL, *, nonce: str | None, access_token: str | None = None) -> str:
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": htu(url),
            "iat": int(time.time()),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        if access_token is not None:
            claims["ath"] = b64url_sha256(access_token)
        header = {"alg": ALGORITHM, "typ": "dpop+jwt", "jwk": self._public}
        return jwt.encode(header, claims, self._key, algorithms=[ALGORITHM])


class Nonces:
    """The newest nonce each origin sent, for the next proof to it (bounded: origins are strangers')."""

    def __init__(self, limit: int = MAX_NONCES) -> None:
        self._limit = limit
        self._by_origin: OrderedDict[str, str] = OrderedDict()

    def get(self, url: httpx.URL) -> str | None:
        return self._by_origin.get(_origin(url))

    def remember(self, url: httpx.URL, response: httpx.Response) -> None:
        nonce = response.headers.get("DPoP-Nonce")
        if nonce:
            origin = _origin(url)
            self._by_origin[origin] = nonce
            self._by_origin.move_to_end(origin)
            while len(self._by_origin) > self._limit:
                self._by_origin.popitem(last=False)


def asks_for_nonce(response: httpx.Response) -> bool:
    """An authorization server says so in a 400 JSON error, a resource server in WWW-Authenticate."""
    if response.status_code == 401:
        return "use_dpop_nonce" in response.headers.get("WWW-Authenticate", "")
    if response.status_code == 400:
        try:
            body = response.json()
        except ValueError:
            return False
        return isinstance(body, dict) and body.get("error") == "use_dpop_nonce"
    return False


async def send(
    http: httpx.AsyncClient, request: httpx.Request, key: DpopKey, nonces: Nonces, access_token: str | None = None
) -> httpx.Response:
    """Send `request` with a proof; when the server asks for a fresher nonce, once more with it."""
    used = nonces.get(request.url)
    response = await _signed(http, request, key, used, access_token)
    nonces.remember(request.url, response)
    fresh = nonces.get(request.url)
    if asks_for_nonce(response) and fresh != used:
        response = await _signed(http, request, key, fresh, access_token)
        nonces.remember(request.url, response)
    return response


async def _signed(
    http: httpx.AsyncClient, request: httpx.Request, key: DpopKey, nonce: str | None, access_token: str | None
) -> httpx.Response:
    request.headers["DPoP"] = key.proof(request.method, request.url, nonce=nonce, access_token=access_token)
    return await http.send(request)


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.netloc.decode('ascii')}"
