"""The OAuth client's sans-I/O parts: sealing, scopes, grants, server metadata, DPoP proofs, client identity."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from appview_api.errors import SignInFailed
from appview_api.oauth.client import SCOPE, load_client_key, make_client, new_client_key
from appview_api.oauth.dpop import DpopKey, Nonces, asks_for_nonce, b64url_sha256, htu
from appview_api.oauth.metadata import check_server
from appview_api.oauth.sealing import Sealer
from appview_api.oauth.signin import pkce_challenge
from appview_api.oauth.tokens import check_grant, covers_scope
from indexer.errors import ConfigError

SECRET = "s" * 32
DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
ISSUER = "https://auth.example.test"


# --- sealing ------------------------------------------------------------------------------------------


def test_a_sealed_blob_opens_only_with_its_secret_its_context_and_unaltered() -> None:
    sealer = Sealer(SECRET)
    sealed = sealer.seal(b"tokens", "oauth-session:abc")

    assert sealer.open(sealed, "oauth-session:abc") == b"tokens"
    assert b"tokens" not in sealed
    assert sealer.open(sealed, "oauth-session:xyz") is None  # moved under another row
    assert Sealer("t" * 32).open(sealed, "oauth-session:abc") is None  # another secret
    altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert sealer.open(altered, "oauth-session:abc") is None
    assert sealer.open(b"\x02" + sealed[1:], "oauth-session:abc") is None  # unknown version
    assert sealer.open(b"\x01short", "oauth-session:abc") is None


# --- scopes and grants ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "covered"),
    [
        ("atproto repo:app.relay.track", True),
        ("atproto repo:app.relay.track?action=create&action=update&action=delete", True),
        ("atproto repo:*", True),
        ("atproto repo:app.relay.track?action=create", False),
        ("atproto repo:app.relay.track?action=create repo:app.relay.track?action=update&action=delete", True),
        ("atproto", False),
        ("repo:app.relay.track", False),
        ("atproto transition:generic", False),
        ("atproto repo:app.bsky.feed.post", False),
        ("atproto repo:app.relay.trackx", False),
    ],
)
def test_the_granted_scope_must_cover_writing_tracks(scope: str, covered: bool) -> None:
    assert covers_scope(scope) is covered


def grant(**changes: Any) -> dict[str, Any]:
    body = {
        "access_token": "at",
        "refresh_token": "rt",
        "token_type": "DPoP",
        "scope": SCOPE,
        "sub": DID,
        "expires_in": 3599,
    }
    return {k: v for k, v in (body | changes).items() if v is not None}


def test_a_good_grant_is_taken_with_its_expiry() -> None:
    before = time.time()
    taken = check_grant(grant())
    assert (taken.sub, taken.scope, taken.access_token, taken.refresh_token) == (DID, SCOPE, "at", "rt")
    assert before + 3599 <= taken.expires_at <= time.time() + 3599


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"token_type": "Bearer"}, "the token endpoint issued a 'Bearer' token, not a DPoP one"),
        ({"sub": None}, "the token endpoint named no DID (sub)"),
        ({"sub": "alice.test"}, "the token endpoint named no DID (sub)"),
        ({"refresh_token": None}, "the token endpoint issued no access and refresh tokens"),
        (
            {"scope": "atproto"},
            "the permission granted ('atproto') does not include writing tracks (repo:app.relay.track): "
            "sign in again and allow it",
        ),
    ],
)
def test_a_grant_short_of_the_profile_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SignInFailed) as refused:
        check_grant(grant(**changes))
    assert refused.value.reason == message


# --- authorization server metadata ---------------------------------------------------------------------


def server_document(**changes: Any) -> dict[str, Any]:
    document = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/oauth/authorize",
        "token_endpoint": f"{ISSUER}/oauth/token",
        "pushed_authorization_request_endpoint": f"{ISSUER}/oauth/par",
        "revocation_endpoint": f"{ISSUER}/oauth/revoke",
        "require_pushed_authorization_requests": True,
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": True,
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": ["ES256"],
        "scopes_supported": ["atproto", "transition:generic"],
        "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
    }
    return {k: v for k, v in (document | changes).items() if v is not None}


def test_a_conforming_server_is_described() -> None:
    server = check_server(server_document(), ISSUER, auth_method="private_key_jwt", allow_insecure=False)
    assert (server.par_endpoint, server.token_endpoint, server.revocation_endpoint) == (
        f"{ISSUER}/oauth/par",
        f"{ISSUER}/oauth/token",
        f"{ISSUER}/oauth/revoke",
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"issuer": "https://evil.example.test"}, f"the authorization server at {ISSUER} calls itself 'https://evil.example.test'"),
        ({"authorization_response_iss_parameter_supported": None}, f"the authorization server {ISSUER} does not send the iss parameter"),
        ({"client_id_metadata_document_supported": False}, f"the authorization server {ISSUER} does not support client metadata documents"),
        ({"pushed_authorization_request_endpoint": None}, f"the authorization server {ISSUER} has no pushed_authorization_request_endpoint"),
        ({"code_challenge_methods_supported": ["plain"]}, f"the authorization server {ISSUER} does not support S256 (code_challenge_methods_supported)"),
        ({"dpop_signing_alg_values_supported": ["RS256"]}, f"the authorization server {ISSUER} does not support ES256 (dpop_signing_alg_values_supported)"),
        ({"scopes_supported": ["openid"]}, f"the authorization server {ISSUER} does not support atproto (scopes_supported)"),
        ({"token_endpoint_auth_methods_supported": ["none"]}, f"the authorization server {ISSUER} does not support private_key_jwt (token_endpoint_auth_methods_supported)"),
        ({"token_endpoint": "http://auth.example.test/oauth/token"}, "the authorization server's token_endpoint 'http://auth.example.test/oauth/token' is refused: scheme 'http' is not allowed"),
        ({"token_endpoint": "https://10.0.0.1/token"}, "the authorization server's token_endpoint 'https://10.0.0.1/token' is refused: address 10.0.0.1 is private"),
    ],
)
def test_a_server_short_of_the_profile_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SignInFailed) as refused:
        check_server(server_document(**changes), ISSUER, auth_method="private_key_jwt", allow_insecure=False)
    assert refused.value.reason == message


# --- DPoP ------------------------------------------------------------------------------------------------


def test_a_proof_is_signed_by_the_key_it_carries_and_binds_method_url_nonce_and_token() -> None:
    key = DpopKey.generate()
    proof = key.proof("POST", "https://pds.example.test/xrpc/x?y=1#z", nonce="n1", access_token="token")

    header = jwt.decode(proof, ECKey.import_key(key.to_jwk())).header
    public = ECKey.import_key(header["jwk"])
    claims = jwt.decode(proof, public, algorithms=["ES256"]).claims
    assert (header["typ"], header["alg"], "d" in header["jwk"]) == ("dpop+jwt", "ES256", False)
    assert (claims["htm"], claims["htu"], claims["nonce"], claims["ath"]) == (
        "POST", "https://pds.example.test/xrpc/x", "n1", b64url_sha256("token")
    )
    assert abs(claims["iat"] - time.time()) < 5 and len(claims["jti"]) >= 16
    second = jwt.decode(key.proof("POST", "https://pds.example.test/", nonce=None), public).claims
    assert "nonce" not in second and "ath" not in second and second["jti"] != claims["jti"]


def test_a_key_survives_its_jwk() -> None:
    key = DpopKey.generate()
    again = DpopKey.from_jwk(key.to_jwk())
    proof = again.proof("GET", "https://a.test/", nonce=None)
    assert jwt.decode(proof, ECKey.import_key(key.to_jwk())).claims["htm"] == "GET"


def test_htu_drops_query_and_fragment_only() -> None:
    assert htu("http://localhost:2583/oauth/token?x=1#f") == "http://localhost:2583/oauth/token"


def test_nonces_are_kept_per_origin_and_bounded() -> None:
    nonces = Nonces(limit=2)
    a, b, c = (httpx.URL(f"https://{h}.test/p") for h in "abc")
    nonces.remember(a, httpx.Response(200, headers={"DPoP-Nonce": "na"}))
    nonces.remember(b, httpx.Response(400, headers={"DPoP-Nonce": "nb"}))
    nonces.remember(a, httpx.Response(200))  # no nonce: the last one stays
    assert (nonces.get(a), nonces.get(b), nonces.get(httpx.URL("https://a.test/other"))) == ("na", "nb", "na")
    nonces.remember(c, httpx.Response(200, headers={"DPoP-Nonce": "nc"}))
    assert (nonces.get(a), nonces.get(c)) == (None, "nc")  # a, the oldest, made room


@pytest.mark.parametrize(
    ("response", "asks"),
    [
        (httpx.Response(400, json={"error": "use_dpop_nonce"}), True),
        (httpx.Response(401, headers={"WWW-Authenticate": 'DPoP error="use_dpop_nonce"'}), True),
        (httpx.Response(401, headers={"WWW-Authenticate": 'DPoP error="invalid_token"'}), False),
        (httpx.Response(400, json={"error": "invalid_grant"}), False),
        (httpx.Response(400, text="not json"), False),
        (httpx.Response(200, json={"error": "use_dpop_nonce"}), False),
    ],
)
def test_which_answers_ask_for_a_fresh_nonce(response: httpx.Response, asks: bool) -> None:
    assert asks_for_nonce(response) is asks


# --- the client ------------------------------------------------------------------------------------------


def test_a_loopback_url_makes_the_loopback_client() -> None:
    client = make_client("http://127.0.0.1:8080/", ECKey.generate_key("P-256", private=True))
    assert client.client_id == (
        "http://localhost?redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Foauth%2Fcallback"
        "&scope=atproto+repo%3Aapp.relay.track"
    )
    assert (client.redirect_uri, client.auth_method, client.confidential) == (
        "http://127.0.0.1:8080/oauth/callback", "none", False
    )
    assert client.authentication(ISSUER) == {"client_id": client.client_id}


def test_localhost_cannot_be_the_loopback_redirect() -> None:
    with pytest.raises(ConfigError) as refused:
        make_client("http://localhost:8080", None)
    assert refused.value.reason == (
        "RELAY_PUBLIC_URL: sign-in on a loopback URL needs 127.0.0.1 or [::1], not localhost "
        "(authorization servers refuse localhost redirect URIs)"
    )


def test_a_deployment_is_a_confidential_client_that_proves_itself_with_its_key() -> None:
    key = load_client_key(new_client_key())
    client = make_client("https://relay.example.com", key)

    metadata = client.metadata()
    assert metadata == {
        "client_id": "https://relay.example.com/oauth-client-metadata.json",
        "client_name": "relay",
        "client_uri": "https://relay.example.com",
        "application_type": "web",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "redirect_uris": ["https://relay.example.com/oauth/callback"],
        "scope": "atproto repo:app.relay.track",
        "token_endpoint_auth_method": "private_key_jwt",
        "token_endpoint_auth_signing_alg": "ES256",
        "jwks_uri": "https://relay.example.com/oauth/jwks.json",
        "dpop_bound_access_tokens": True,
    }
    [public] = client.jwks()["keys"]
    assert "d" not in public and (public["kid"], public["alg"], public["use"]) == (key.thumbprint(), "ES256", "sig")
    fields = client.authentication(ISSUER)
    assert fields["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    token = jwt.decode(fields["client_assertion"], ECKey.import_key(public), algorithms=["ES256"])
    assert token.header["kid"] == public["kid"]
    assert (token.claims["iss"], token.claims["sub"], token.claims["aud"]) == (client.client_id, client.client_id, ISSUER)
    assert token.claims["exp"] - token.claims["iat"] == 60


def test_the_client_key_is_a_p256_private_key_as_jwk_or_pem() -> None:
    key = ECKey.generate_key("P-256", private=True)
    pem = key.as_pem(private=True).decode().replace("\n", "\\n")
    assert load_client_key(pem).thumbprint() == key.thumbprint()
    assert load_client_key(orjson.dumps(key.as_dict(private=True)).decode()).thumbprint() == key.thumbprint()
    public_only = orjson.dumps(key.as_dict(private=False)).decode()
    with pytest.raises(ConfigError, match="RELAY_OAUTH_CLIENT_KEY: an ES256 client needs a P-256 private key"):
        load_client_key(public_only)
    p384 = orjson.dumps(ECKey.generate_key("P-384", private=True).as_dict(private=True)).decode()
    with pytest.raises(ConfigError, match="RELAY_OAUTH_CLIENT_KEY: an ES256 client needs a P-256 private key"):
        load_client_key(p384)
    with pytest.raises(ConfigError, match=r"RELAY_OAUTH_CLIENT_KEY: not an EC private key"):
        load_client_key("not a key")


def test_pkce_challenge_is_s256_of_the_verifier() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636, appendix B
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
