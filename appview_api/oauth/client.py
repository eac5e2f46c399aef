"""Who this service is to an authorization server: its client_id, redirect URI, scope and, when it can keep
a secret, the key it proves itself with.

Two modes, chosen by RELAY_PUBLIC_URL:
- A deployment (any public URL that is not loopback) is a confidential client. Its client_id is the URL of
  its client metadata document (`/oauth-client-metadata.json`), which names `jwks_uri`, and it
  authenticates every PAR and token request with `private_key_jwt`: an assertion signed by its ES256 key
  (RELAY_OAUTH_CLIENT_KEY, or one generated once and kept sealed in the database). Confidential clients
  get long-lived sessions (the reference PDS: refresh tokens up to 180 days).
- On a loopback URL (development) it is atproto's loopback client: client_id `http://localhost?...`
  carrying its redirect URI and scope, no metadata document, no key. Authorization servers only accept
  loopback redirect URIs on an IP literal, so the URL must name 127.0.0.1 or [::1], not localhost.

The scope asks for the atproto identity and for writing `app.relay.track` records, nothing more: not
`transition:generic`, which would hand over the whole repository.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from indexer.errors import ConfigError

SCOPE = "atproto repo:app.relay.track"
CLIENT_NAME = "relay"
METADATA_PATH = "/oauth-client-metadata.json"
JWKS_PATH = "/oauth/jwks.json"
CALLBACK_PATH = "/oauth/callback"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_SECONDS = 60
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "[::1]", "::1", "localhost"})


@dataclass(frozen=True)
class OAuthClient:
    client_id: str
    redirect_uri: str
    base_url: str
    key: ECKey | None  # None: the loopback client, which has no secret to keep

    @property
    def confidential(self) -> bool:
        return self.key is not None

    @property
    def auth_method(self) -> str:
        return "private_key_jwt" if self.key is not None else "none"

    def authentication(self, issuer: str) -> dict[str, str]:
        """The form fields that identify (and, confidential, authenticate) this client to `issuer`."""
        fields = {"client_id": self.client_id}
        if self.key is not None:
            now = int(time.time())
            claims = {
                "iss": self.client_id,
                "sub": self.client_id,
                "aud": issuer,
                "jti": secrets.token_urlsafe(16),
                "iat": now,
                "exp": now + ASSERTION_SECONDS,
            }
            header = {"alg": "ES256", "typ": "JWT", "kid": self.key.thumbprint()}
            fields["client_assertion_type"] = ASSERTION_TYPE
            fields["client_assertion"] = jwt.encode(header, claims, self.key, algorithms=["ES256"])
        return fields

    def metadata(self) -> dict[str, Any]:
        """The client metadata document served at the client_id URL (confidential mode)."""
        return {
            "client_id": self.client_id,
            "client_name": CLIENT_NAME,
            "client_uri": self.base_url,
            "application_type": "web",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "redirect_uris": [self.redirect_uri],
            "scope": SCOPE,
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "ES256",
            "jwks_uri": f"{self.base_url}{JWKS_PATH}",
            "dpop_bound_access_tokens": True,
        }

    def jwks(self) -> dict[str, Any]:
        if self.key is None:
            return {"keys": []}
        public = dict(self.key.as_dict(private=False))
        public.update(kid=self.key.thumbprint(), use="sig", alg="ES256")
        return {"keys": [public]}


def is_loopback(base_url: str) -> bool:
    return httpx.URL(base_url).host in LOOPBACK_HOSTS


def make_client(base_url: str, key: ECKey | None) -> OAuthClient:
    """The loopback client on a loopback `base_url` (`key` is then unused), else the confidential one."""
    base_url = base_url.rstrip("/")
    redirect_uri = f"{base_url}{CALLBACK_PATH}"
    if is_loopback(base_url):
        if httpx.URL(base_url).host == "localhost":
            raise ConfigError(
                "RELAY_PUBLIC_URL: sign-in on a loopback URL needs 127.0.0.1 or [::1], not localhost "
                "(authorization servers refuse localhost redirect URIs)"
            )
        client_id = "http://localhost?" + urlencode({"redirect_uri": redirect_uri, "scope": SCOPE})
        return OAuthClient(client_id, redirect_uri, base_url, None)
    if key is None:
        raise ConfigError("a confidential OAuth client needs its ES256 key")
    return OAuthClient(f"{base_url}{METADATA_PATH}", redirect_uri, base_url, key)


def new_client_key() -> str:
    """A fresh P-256 private key as JWK JSON: what RELAY_OAUTH_CLIENT_KEY holds, and what is kept when unset."""
    return orjson.dumps(ECKey.generate_key("P-256", private=True).as_dict(private=True)).decode()


def load_client_key(text: str) -> ECKey:
    """RELAY_OAUTH_CLIENT_KEY: a P-256 private key as JWK JSON or PEM (newlines may be written as \\n)."""
    try:
        if text.lstrip().startswith("{"):
            key = ECKey.import_key(orjson.loads(text))
        else:
            key = ECKey.import_key(text.replace("\\n", "\n").encode())
    except (JoseError, ValueError, TypeError) as exc:
        raise ConfigError(f"RELAY_OAUTH_CLIENT_KEY: not an EC private key ({exc})") from None
    if key.as_dict(private=False).get("crv") != "P-256" or not key.is_private:
        raise ConfigError("RELAY_OAUTH_CLIENT_KEY: an ES256 client needs a P-256 private key")
    return key
