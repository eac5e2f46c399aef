"""From a PDS to its authorization server, with the checks the atproto OAuth profile asks for.

The PDS names its authorization server in `/.well-known/oauth-protected-resource`; that server describes
itself in `/.well-known/oauth-authorization-server`, whose `issuer` must be exactly the URL it was fetched
from (a server cannot pass itself off as another). It must support what this client relies on: PAR, PKCE
with S256, DPoP with ES256, the `iss` response parameter, client metadata documents, the `atproto` scope
and this client's authentication method. Anything less is refused before the person is sent there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from appview_api.errors import SignInFailed
from appview_api.oauth.fetch import checked_url, get_json

RESOURCE_PATH = "/.well-known/oauth-protected-resource"
SERVER_PATH = "/.well-known/oauth-authorization-server"


@dataclass(frozen=True)
class AuthServer:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    par_endpoint: str
    revocation_endpoint: str | None


def origin(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}"


def authorization_server_of(document: Mapping[str, Any], pds_url: str) -> str:
    """The issuer a PDS's protected-resource metadata names (the first, as the profile says)."""
    servers = document.get("authorization_servers")
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], str):
        raise SignInFailed(f"the PDS at {pds_url} names no authorization server")
    return servers[0].rstrip("/")


def check_server(document: Mapping[str, Any], issuer: str, *, auth_method: str, allow_insecure: bool) -> AuthServer:
    def endpoint(name: str) -> str:
        value = document.get(name)
        if not isinstance(value, str) or not value:
            raise SignInFailed(f"the authorization server {issuer} has no {name}")
        return checked_url(value, f"the authorization server's {name}", allow_insecure=allow_insecure)

    def supports(name: str, value: str) -> None:
        values = document.get(name)
        if not isinstance(values, list) or value not in values:
            raise SignInFailed(f"the authorization server {issuer} does not support {value} ({name})")

    if document.get("issuer") != issuer:
        raise SignInFailed(f"the authorization server at {issuer} calls itself {str(document.get('issuer'))[:200]!r}")
    if document.get("authorization_response_iss_parameter_supported") is not True:
        raise SignInFailed(f"the authorization server {issuer} does not send the iss parameter")
    if document.get("client_id_metadata_document_supported") is not True:
        raise SignInFailed(f"the authorization server {issuer} does not support client metadata documents")
    supports("response_types_supported", "code")
    supports("grant_types_supported", "authorization_code")
    supports("grant_types_supported", "refresh_token")
    supports("code_challenge_methods_supported", "S256")
    supports("dpop_signing_alg_values_supported", "ES256")
    supports("scopes_supported", "atproto")
    supports("token_endpoint_auth_methods_supported", auth_method)
    if auth_method == "private_key_jwt":
        supports("token_endpoint_auth_signing_alg_values_supported", "ES256")
    revocation = document.get("revocation_endpoint")
    return AuthServer(
        issuer=issuer,
        authorization_endpoint=endpoint("authorization_endpoint"),
        token_endpoint=endpoint("token_endpoint"),
        par_endpoint=endpoint("pushed_authorization_request_endpoint"),
        revocation_endpoint=endpoint("revocation_endpoint") if isinstance(revocation, str) and revocation else None,
    )


async def discover(http: httpx.AsyncClient, pds_url: str, *, auth_method: str, allow_insecure: bool) -> AuthServer:
    pds_url = checked_url(pds_url.rstrip("/"), "the PDS URL", allow_insecure=allow_insecure)
    resource = await get_json(http, f"{origin(pds_url)}{RESOURCE_PATH}", "the PDS's OAuth metadata")
    issuer = authorization_server_of(resource, pds_url)
    checked_url(issuer, "the authorization server", allow_insecure=allow_insecure)
    if origin(issuer) != issuer:
        raise SignInFailed(f"the authorization server {issuer[:200]!r} is not an origin (scheme, host, port)")
    document = await get_json(http, f"{issuer}{SERVER_PATH}", "the authorization server's metadata")
    return check_server(document, issuer, auth_method=auth_method, allow_insecure=allow_insecure)
