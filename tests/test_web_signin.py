"""Signing in with atproto OAuth against the reference PDS's authorization server, step by step, and every
way a sign-in can be refused, each with its exact answer.

Over HTTP through the served app where a browser's view matters (cookies, redirects, pages); in-process
(`signin_parts`) where the test needs the session store, the nonce cache or the token endpoint itself.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from appview_api.errors import AuthRequired
from appview_api.oauth import dpop
from appview_api.oauth.client import SCOPE
from appview_api.oauth.dpop import Nonces
from appview_api.oauth.sealing import Sealer
from appview_api.oauth.sessions import OAuthSession, row_key
from appview_api.oauth.tokens import Tokens
from appview_api.publish.pds import Pds, Session
from tests.fixtures.pds import LocalPds
from tests.fixtures.publish import PublishService
from tests.fixtures.web import SESSION_SECRET, SignInParts, Visitor, query, sign_in, user, web_service

pytestmark = pytest.mark.slow  # end to end: the real PDS and its authorization server

TRACK = {
    "$type": "app.relay.track",
    "title": "Nonce Waltz",
    "artist": "The Fixtures",
    "audioUrl": "https://audio.example.test/" + "a" * 64 + ".mp3",
    "fileType": "mp3",
    "createdAt": "2025-10-28T22:30:00.000Z",
}


def page_error(response: httpx.Response) -> tuple[int, str]:
    found = re.search(r'<p class="error" role="alert">(.*?)</p>', response.text, re.S)
    assert found is not None, response.text
    return response.status_code, found.group(1).strip()


def unescape(text: str) -> str:
    return text.replace("&#39;", "'").replace("&#34;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


# --- the flow, step by step, over HTTP -----------------------------------------------------------------


def test_signing_in_goes_through_par_to_the_pds_and_back_with_a_sealed_session(
    web: PublishService, visitor: Visitor, local_pds: LocalPds
) -> None:
    account = local_pds.create_account("web")

    started = visitor.start_sign_in(account.handle, return_to="/upload")

    assert started.status_code == 303
    location = started.headers["location"]
    assert location.startswith(f"{local_pds.pds_public_url}/oauth/authorize?")
    params = query(location)
    assert set(params) == {"client_id", "request_uri"}  # everything else went by PAR
    assert params["client_id"] == f"http://localhost?redirect_uri=http%3A%2F%2F127.0.0.1%3A{web.settings.api.port}%2Foauth%2Fcallback&scope=atproto+repo%3Aapp.relay.track"
    assert params["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")
    [binding] = [c for c in started.headers.get_list("set-cookie") if c.startswith("relay_signin=")]
    assert "HttpOnly" in binding and "SameSite=lax" in binding and "Max-Age=600" in binding

    back = user(local_pds, account).authorize(location)
    assert set(query(back)) == {"state", "iss", "code"} and query(back)["iss"] == local_pds.pds_public_url
    done = visitor.client.get(back)

    assert (done.status_code, done.headers["location"]) == (303, "/upload")
    [cookie] = [c for c in done.headers.get_list("set-cookie") if c.startswith("relay_session=")]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Max-Age=2592000" in cookie and "Secure" not in cookie
    session_id = visitor.client.cookies["relay_session"]
    [(stored_did, sealed)] = web.store.reader().execute("SELECT did, sealed FROM oauth_sessions").fetchall()
    assert stored_did == account.did
    assert session_id.encode() not in sealed and b"ref-" not in sealed and b"eyJ" not in sealed  # sealed
    assert web.store.reader().execute("SELECT id FROM oauth_sessions").fetchone() == (row_key(session_id),)
    assert web.store.reader().execute("SELECT count(*) FROM oauth_requests").fetchone() == (0,)  # used up
    page = visitor.client.get("/upload")
    assert page.status_code == 200 and f"@{account.handle}" in page.text and "Sign out" in page.text


@pytest.mark.parametrize("kind", ["did", "pds"])
def test_a_did_or_a_pds_url_signs_in_too(visitor: Visitor, local_pds: LocalPds, kind: str) -> None:
    account = local_pds.create_account(kind)
    identifier = account.did if kind == "did" else local_pds.pds_public_url

    started = visitor.start_sign_in(identifier)
    back = user(local_pds, account).authorize(started.headers["location"])
    done = visitor.client.get(back)

    assert (done.status_code, done.headers["location"]) == (303, "/")
    assert f"@{account.handle}" in visitor.client.get("/").text


# --- refusals, each with its exact answer --------------------------------------------------------------


def test_a_forged_state_is_refused_and_a_real_one_completes_only_once(
    visitor: Visitor, local_pds: LocalPds
) -> None:
    account = local_pds.create_account("state")
    started = visitor.start_sign_in(account.handle)
    back = user(local_pds, account).authorize(started.headers["location"])
    forged = back.replace(f"state={query(back)['state']}", "state=forged-state")

    assert page_error(visitor.client.get(forged)) == (400, "this sign-in is unknown, already used or expired: start again")
    assert visitor.client.get(back).status_code == 303
    assert page_error(visitor.client.get(back)) == (400, "this sign-in is unknown, already used or expired: start again")
    assert page_error(visitor.client.get("/oauth/callback")) == (400, "the answer carries no state")


def test_an_iss_that_is_not_the_servers_is_refused(visitor: Visitor, local_pds: LocalPds) -> None:
    account = local_pds.create_account("iss")
    started = visitor.start_sign_in(account.handle)
    back = user(local_pds, account).authorize(started.headers["location"])
    issuer = query(back)["iss"]
    mismatched = httpx.URL(back).copy_merge_params({"iss": "https://evil.example.test"})

    status, message = page_error(visitor.client.get(str(mismatched)))

    assert (status, unescape(message)) == (
        400, f"the answer comes from issuer 'https://evil.example.test', not {issuer}"
    )
    assert "relay_session" not in visitor.client.cookies


def test_a_callback_carried_to_another_browser_completes_nothing(web: PublishService, local_pds: LocalPds) -> None:
    account = local_pds.create_account("csrf")
    victim, attacker = Visitor(web), Visitor(web)
    try:
        started = attacker.start_sign_in(account.handle)
        back = user(local_pds, account).authorize(started.headers["location"])

        assert page_error(victim.client.get(back)) == (
            400, "this sign-in was started in another browser (or its cookie expired): start again"
        )
        assert "relay_session" not in victim.client.cookies
    finally:
        victim.close()
        attacker.close()


def test_a_token_for_another_did_is_refused(visitor: Visitor, local_pds: LocalPds) -> None:
    asked, other = local_pds.create_account("asked"), local_pds.create_account("other")

    done = visitor.sign_in(asked, as_user=other)

    assert page_error(done) == (400, f"you signed in as {other.did}, but the sign-in was for {asked.did}")
    assert "relay_session" not in visitor.client.cookies


def test_a_grant_without_writing_tracks_is_refused(visitor: Visitor, local_pds: LocalPds) -> None:
    account = local_pds.create_account("scope")

    done = visitor.sign_in(account, scope="atproto")

    status, message = page_error(done)
    assert (status, unescape(message)) == (
        400,
        "the permission granted ('atproto') does not include writing tracks (repo:app.relay.track): "
        "sign in again and allow it",
    )


def test_a_refusal_at_the_pds_comes_back_as_its_error(visitor: Visitor, local_pds: LocalPds) -> None:
    account = local_pds.create_account("deny")
    started = visitor.start_sign_in(account.handle)

    back = user(local_pds, account).reject(started.headers["location"])

    assert page_error(visitor.client.get(back)) == (
        400, "the authorization server refused: access_denied: The user rejected the request"
    )
    assert "relay_session" not in visitor.client.cookies


@pytest.mark.parametrize(
    ("identifier", "status", "message"),
    [
        ("not a handle!", 400, "'not a handle!' is not a handle, a DID or an http(s) URL"),
        ("did:plc:bbbbbbbbbbbbbbbbbbbbbbbb", 400, "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb: DID document fetch answered 404"),
        (
            "nobody-here.test",
            400,
            "the handle nobody-here.test does not resolve to a DID "
            "(no did= TXT record; https://nobody-here.test/.well-known/atproto-did: no such domain)",
        ),
        ("ftp://pds.example.test", 400, "'ftp://pds.example.test' is not a handle, a DID or an http(s) URL"),
    ],
)
def test_what_cannot_sign_in_is_named(visitor: Visitor, identifier: str, status: int, message: str) -> None:
    assert unescape_error(visitor.start_sign_in(identifier)) == (status, message)


def unescape_error(response: httpx.Response) -> tuple[int, str]:
    status, message = page_error(response)
    return status, unescape(message)


def test_sign_in_attempts_are_rate_limited_per_address(tmp_path: Path, local_pds: LocalPds) -> None:
    with web_service(tmp_path, local_pds, RELAY_SIGNIN_RATE_PER_MINUTE=2) as service:
        visitor = Visitor(service)
        try:
            answers = [visitor.start_sign_in("nobody-here.test") for _ in range(3)]
        finally:
            visitor.close()

    assert [a.status_code for a in answers] == [400, 400, 429]
    assert answers[2].headers["retry-after"] == "30"
    assert page_error(answers[2]) == (429, "too many sign-in attempts: retry in 30 s")


def test_sign_out_revokes_the_tokens_and_forgets_the_session(
    web: PublishService, visitor: Visitor, local_pds: LocalPds
) -> None:
    account = local_pds.create_account("out")
    assert visitor.sign_in(account).status_code == 303
    session = opened_session(web, visitor.client.cookies["relay_session"])

    out = visitor.client.post("/signout", data={"csrf": visitor.csrf("/")})

    assert (out.status_code, out.headers["location"]) == (303, "/")
    assert web.store.reader().execute("SELECT count(*) FROM oauth_sessions").fetchone() == (0,)
    assert "relay_session" not in visitor.client.cookies
    assert "Sign in" in visitor.client.get("/").text
    refused = asyncio.run(get_session(session))  # the PDS no longer honours the access token
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_token")


def opened_session(web: PublishService, session_id: str) -> OAuthSession:
    [(sealed,)] = web.store.reader().execute("SELECT sealed FROM oauth_sessions").fetchall()
    plain = Sealer(SESSION_SECRET).open(sealed, "oauth-session:" + row_key(session_id))
    assert plain is not None
    return OAuthSession.from_json(plain)


async def get_session(session: OAuthSession) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        request = http.build_request("GET", f"{session.pds_url}/xrpc/com.atproto.server.getSession")
        request.headers["Authorization"] = f"DPoP {session.access_token}"
        return await dpop.send(http, request, session.dpop, dpop.Nonces(), session.access_token)


# --- nonces, refresh and replay, in-process --------------------------------------------------------------


async def test_a_stale_nonce_is_replaced_by_the_servers_fresh_one_at_the_auth_server_and_the_pds(
    signin_parts: SignInParts, local_pds: LocalPds
) -> None:
    account = local_pds.create_account("nonce")
    session_id = await sign_in(signin_parts, local_pds, account)
    sessions = signin_parts.oauth.sessions
    assert sessions is not None
    origin = httpx.URL(local_pds.pds_public_url)
    stale = httpx.Response(200, headers={"DPoP-Nonce": "a-rotated-away-nonce"})
    sessions.nonces.remember(origin, stale)  # as if the servers had moved on since

    pds = Pds(signin_parts.settings.identity, signin_parts.outbound)
    try:
        session = await sessions.get(session_id)
        assert session is not None
        repo = Session(session.did, session.handle, session.pds_url, sessions.credentials(session_id))
        written = await pds.put_record(repo, "3m5aaaaaaaaa2", TRACK, swap=None)
    finally:
        await pds.aclose()

    assert written.uri == f"at://{account.did}/app.relay.track/3m5aaaaaaaaa2"
    assert sessions.nonces.get(origin) not in (None, "a-rotated-away-nonce")
    # And at the authorization server: a refresh with a stale nonce goes through on the retry.
    sessions.nonces.remember(origin, httpx.Response(200, headers={"DPoP-Nonce": "another-stale-nonce"}))
    refreshed = await sessions.fresh(session_id, rejected=session.access_token)
    assert refreshed.access_token != session.access_token
    assert sessions.nonces.get(origin) != "another-stale-nonce"


async def test_a_refresh_replaces_both_tokens_and_is_kept_sealed(signin_parts: SignInParts, local_pds: LocalPds) -> None:
    account = local_pds.create_account("refresh")
    session_id = await sign_in(signin_parts, local_pds, account)
    sessions = signin_parts.oauth.sessions
    assert sessions is not None
    before = signin_parts.sealed_session(session_id)

    after = await sessions.fresh(session_id, rejected=before.access_token)

    assert after.access_token != before.access_token and after.refresh_token != before.refresh_token
    assert (after.did, after.scope) == (account.did, SCOPE)
    assert signin_parts.sealed_session(session_id).refresh_token == after.refresh_token


async def test_a_replayed_refresh_token_is_refused_and_ends_the_session(
    signin_parts: SignInParts, local_pds: LocalPds
) -> None:
    account = local_pds.create_account("replay")
    session_id = await sign_in(signin_parts, local_pds, account)
    sessions = signin_parts.oauth.sessions
    assert sessions is not None
    old = signin_parts.sealed_session(session_id)
    await sessions.fresh(session_id, rejected=old.access_token)
    assert signin_parts.oauth.client is not None
    async with httpx.AsyncClient() as http:
        tokens = Tokens(signin_parts.oauth.client, http, Nonces())
        with pytest.raises(AuthRequired) as replayed:
            await tokens.refresh(old.issuer, old.token_endpoint, old.dpop, old.refresh_token)
    assert replayed.value.reason == (
        "your sign-in has ended (the authorization server refused: invalid_grant: Refresh token replayed): sign in again"
    )
    # The server answers a replay by revoking the whole session: ours learns it at its next refresh.
    current = await sessions.get(session_id)
    assert current is not None
    with pytest.raises(AuthRequired) as ended:
        await sessions.fresh(session_id, rejected=current.access_token)
    assert ended.value.reason == (
        "your sign-in has ended (the authorization server refused: invalid_grant: Invalid refresh token): sign in again"
    )
    assert await sessions.get(session_id) is None
    assert signin_parts.store.oauth_session(row_key(session_id)) is None


async def test_concurrent_refreshes_of_one_session_spend_its_refresh_token_once(
    signin_parts: SignInParts, local_pds: LocalPds
) -> None:
    account = local_pds.create_account("lock")
    session_id = await sign_in(signin_parts, local_pds, account)
    sessions = signin_parts.oauth.sessions
    assert sessions is not None
    stale = signin_parts.sealed_session(session_id).access_token

    results = await asyncio.gather(*(sessions.fresh(session_id, rejected=stale) for _ in range(5)))

    assert len({r.access_token for r in results}) == 1  # one refresh; the others took its tokens
    again = await sessions.fresh(session_id, rejected=results[0].access_token)  # the session lives on
    assert again.access_token != results[0].access_token


async def test_a_write_refreshes_an_expired_token_first_and_a_refused_one_once(
    signin_parts: SignInParts, local_pds: LocalPds
) -> None:
    account = local_pds.create_account("expiry")
    session_id = await sign_in(signin_parts, local_pds, account)
    sessions = signin_parts.oauth.sessions
    assert sessions is not None
    key = row_key(session_id)
    # Sessions are this process's own to change; the test changes its copy in memory as time would.
    pds = Pds(signin_parts.settings.identity, signin_parts.outbound)
    try:
        first = await sessions.get(session_id)
        assert first is not None
        repo = Session(first.did, first.handle, first.pds_url, sessions.credentials(session_id))
        sessions._cache[key] = replace(first, expires_at=time.time() - 1)  # expired: refreshed before the write
        await pds.put_record(repo, "3m5aaaaaaaaa3", TRACK, swap=None)
        second = await sessions.get(session_id)
        assert second is not None and second.access_token != first.access_token
        # A token the PDS refuses (401 invalid_token) though it has not expired: refreshed, the write retried.
        sessions._cache[key] = replace(second, access_token=second.access_token[:-4] + "AAAA")
        await pds.put_record(repo, "3m5aaaaaaaaa4", TRACK, swap=None)
        third = await sessions.get(session_id)
        assert third is not None and third.refresh_token != second.refresh_token
    finally:
        await pds.aclose()
    listed = httpx.get(
        f"{local_pds.pds_url}/xrpc/com.atproto.repo.listRecords",
        params={"repo": account.did, "collection": "app.relay.track"},
    ).json()
    assert sorted(r["uri"].rsplit("/", 1)[1] for r in listed["records"]) == ["3m5aaaaaaaaa3", "3m5aaaaaaaaa4"]
