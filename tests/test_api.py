"""The XRPC API over a real uvicorn and a real DuckDB file: endpoints, visibility, errors, CORS, metrics."""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path

import pytest

from indexer.atproto.datetimes import iso_from_us
from tests.fixtures.api import ACTOR, ALICE, BOB, CAROL, FEED, PUBLIC_URL, SEARCH, TRACK, Api, at, start_api, uris
from tests.servers.events import iso, now_us

# -- discovery ------------------------------------------------------------------------------------------


def test_discovery_lists_every_account_newest_first(api: Api) -> None:
    first = api.catalog.publish(ALICE, "One", "Al", created_at=at(1))
    second = api.catalog.publish(BOB, "Two", "Bo", created_at=at(2))
    third = api.catalog.publish(ALICE, "Three", "Al", created_at=at(3))
    assert uris(api.xrpc(FEED)) == [third, second, first]


def test_track_view_has_exactly_the_lexicon_fields(api: Api) -> None:
    uri = api.catalog.publish(ALICE, "Full", "Al", album="LP", duration=215, created_at=at(5))
    api.catalog.handle(ALICE, "alice.test")
    bare = api.catalog.publish(BOB, "Bare", "Bo", created_at=at(4))
    full, minimal = api.xrpc(FEED).json()["tracks"]
    rkey = uri.rsplit("/", 1)[1]
    row = api.store.reader().execute("SELECT cid, indexed_us FROM tracks WHERE rkey = ?", [rkey]).fetchone()
    assert full == {
        "uri": uri,
        "cid": row[0],
        "author": {"did": ALICE, "handle": "alice.test"},
        "title": "Full",
        "artist": "Al",
        "album": "LP",
        "audioUrl": f"https://cdn.relay.test/{rkey}.mp3",
        "fileType": "mp3",
        "duration": 215,
        "createdAt": at(5),
        "indexedAt": iso_from_us(row[1]),
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", full["indexedAt"])
    assert minimal["uri"] == bare
    assert minimal["author"] == {"did": BOB}  # handle not resolved: omitted, not null
    assert "album" not in minimal and "duration" not in minimal


def test_a_future_created_at_sorts_by_its_indexing_time(api: Api) -> None:
    old = api.catalog.publish(ALICE, created_at=at(1))
    future = api.catalog.publish(BOB, created_at=iso(now_us() + 3_600_000_000))  # within the allowed skew
    recent = api.catalog.publish(ALICE, created_at=at(2))
    assert uris(api.xrpc(FEED)) == [future, recent, old]


def test_new_tracks_show_up_after_a_cached_page(api: Api) -> None:
    first = api.catalog.publish(ALICE, created_at=at(1))
    assert uris(api.xrpc(FEED)) == [first]
    second = api.catalog.publish(ALICE, created_at=at(2))
    assert uris(api.xrpc(FEED)) == [second, first]


# -- visibility -----------------------------------------------------------------------------------------


@pytest.fixture
def mixed(api: Api) -> dict[str, str]:
    """One visible track and one of each invisible kind, all titled 'Hidden gem' but the visible one."""
    shown = api.catalog.publish(ALICE, "Visible gem", created_at=at(1))
    pending = api.catalog.publish(ALICE, "Hidden gem", audio=None, created_at=at(2))
    unavailable = api.catalog.publish(ALICE, "Hidden gem", audio="unavailable", created_at=at(3))
    deleted = api.catalog.publish(ALICE, "Hidden gem", created_at=at(4))
    api.catalog.delete(deleted)
    hidden = api.catalog.publish(BOB, "Hidden gem", created_at=at(5))
    api.catalog.account(BOB, active=False, status="takendown")
    purged = api.catalog.publish(CAROL, "Hidden gem", created_at=at(6))
    api.catalog.account(CAROL, active=False, status="deleted")
    return {
        "shown": shown,
        "pending": pending,
        "unavailable": unavailable,
        "deleted": deleted,
        "hidden": hidden,
        "purged": purged,
    }


def test_only_verified_visible_tracks_appear_in_feeds(api: Api, mixed: dict[str, str]) -> None:
    assert uris(api.xrpc(FEED)) == [mixed["shown"]]
    assert uris(api.xrpc(ACTOR, actor=ALICE)) == [mixed["shown"]]
    assert uris(api.xrpc(ACTOR, actor=BOB)) == []
    assert uris(api.xrpc(SEARCH, q="gem")) == [mixed["shown"]]


@pytest.mark.parametrize("kind", ["pending", "unavailable", "deleted", "hidden", "purged"])
def test_invisible_tracks_are_not_found(api: Api, mixed: dict[str, str], kind: str) -> None:
    response = api.xrpc(TRACK, uri=mixed[kind])
    assert response.status_code == 404
    assert response.json() == {"error": "TrackNotFound", "message": f"no visible track at {mixed[kind]}"}


def test_reactivated_account_shows_its_tracks_again(api: Api) -> None:
    uri = api.catalog.publish(BOB, created_at=at(1))
    api.catalog.account(BOB, active=False, status="deactivated")
    assert uris(api.xrpc(FEED)) == []
    api.catalog.account(BOB, active=True)
    assert uris(api.xrpc(FEED)) == [uri]


# -- actor feed -----------------------------------------------------------------------------------------


def test_actor_by_did_or_handle(api: Api) -> None:
    mine = [api.catalog.publish(ALICE, created_at=at(i)) for i in (1, 2)]
    api.catalog.handle(ALICE, "alice.test")
    api.catalog.publish(BOB, created_at=at(3))
    expected = mine[::-1]
    assert uris(api.xrpc(ACTOR, actor=ALICE)) == expected
    assert uris(api.xrpc(ACTOR, actor="alice.test")) == expected
    assert uris(api.xrpc(ACTOR, actor="Alice.TEST")) == expected


@pytest.mark.parametrize("actor", ["nobody.test", "did:plc:" + "z" * 24])
def test_unknown_actor_is_actor_not_found(api: Api, actor: str) -> None:
    api.catalog.publish(ALICE)
    response = api.xrpc(ACTOR, actor=actor)
    assert response.status_code == 400
    assert response.json() == {"error": "ActorNotFound", "message": f"no indexed account {actor!r}"}


def test_known_actor_without_visible_tracks_is_an_empty_list(api: Api) -> None:
    api.catalog.publish(ALICE, audio="unavailable")
    assert api.xrpc(ACTOR, actor=ALICE).json() == {"tracks": []}


# -- single track ---------------------------------------------------------------------------------------


def test_get_track_by_did_and_by_handle_uri(api: Api) -> None:
    uri = api.catalog.publish(ALICE, "Solo", created_at=at(1))
    api.catalog.handle(ALICE, "alice.test")
    found = api.xrpc(TRACK, uri=uri)
    assert found.status_code == 200
    assert found.json()["track"]["uri"] == uri
    assert found.json()["track"]["title"] == "Solo"
    by_handle = api.xrpc(TRACK, uri=uri.replace(ALICE, "alice.test"))
    assert by_handle.json() == found.json()


@pytest.mark.parametrize(
    "uri",
    [
        "at://did:plc:" + "z" * 24 + "/app.relay.track/3kabcdefghij2",
        "at://nobody.test/app.relay.track/3kabcdefghij2",
        "at://" + ALICE + "/app.relay.track/3kabcdefghij2",
    ],
)
def test_get_track_not_found(api: Api, uri: str) -> None:
    api.catalog.publish(ALICE)
    response = api.xrpc(TRACK, uri=uri)
    assert response.status_code == 404
    assert response.json()["error"] == "TrackNotFound"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("https://example.test/x", "is invalid for format at-uri"),
        ("at://", "is invalid for format at-uri"),
        ("at://" + ALICE, "must name an app.relay.track record"),
        ("at://" + ALICE + "/app.bsky.feed.post/3kabcdefghij2", "must name an app.relay.track record"),
        ("at://" + ALICE + "/app.relay.track", "must name an app.relay.track record"),
        ("", "is invalid for format at-uri"),
    ],
)
def test_malformed_track_uri_is_invalid_request(api: Api, uri: str, message: str) -> None:
    response = api.xrpc(TRACK, uri=uri)
    assert response.status_code == 400
    assert response.json()["error"] == "InvalidRequest"
    assert message in response.json()["message"]


# -- search ---------------------------------------------------------------------------------------------


def test_search_is_case_insensitive_over_title_artist_and_album(api: Api) -> None:
    by_title = api.catalog.publish(ALICE, "Neon Nights", "Someone", created_at=at(1))
    by_artist = api.catalog.publish(ALICE, "Other", "NEON band", created_at=at(2))
    by_album = api.catalog.publish(ALICE, "Else", "Nobody", album="neon years", created_at=at(3))
    api.catalog.publish(ALICE, "Unrelated", "Nobody", created_at=at(4))
    body = api.xrpc(SEARCH, q="nEoN").json()
    assert [t["uri"] for t in body["tracks"]] == [by_title, by_artist, by_album]
    assert body["hitsTotal"] == 3


def test_search_requires_every_term(api: Api) -> None:
    both = api.catalog.publish(ALICE, "Blue river", "Echo", created_at=at(1))
    api.catalog.publish(ALICE, "Blue sky", "Echo", created_at=at(2))
    assert uris(api.xrpc(SEARCH, q="  river   BLUE ")) == [both]


def test_search_ranks_by_where_the_term_is_found_then_newest(api: Api) -> None:
    older_first_word = api.catalog.publish(ALICE, "Golden", "X", created_at=at(1))
    newer_first_word = api.catalog.publish(ALICE, "Golden hour", "X", created_at=at(2))
    later_in_title = api.catalog.publish(ALICE, "The golden", "X", created_at=at(3))
    by_artist = api.catalog.publish(ALICE, "Song", "Golden band", created_at=at(4))
    expected = [newer_first_word, older_first_word, later_in_title, by_artist]
    assert uris(api.xrpc(SEARCH, q="golden")) == expected


def test_search_terms_match_word_prefixes(api: Api) -> None:
    goldie = api.catalog.publish(ALICE, "Goldie", "X", created_at=at(1))
    api.catalog.publish(ALICE, "Marigold", "X", created_at=at(2))  # "gol" inside a word: no match
    assert uris(api.xrpc(SEARCH, q="GOL")) == [goldie]
    assert uris(api.xrpc(SEARCH, q="go")) == []  # under three characters: whole words only
    go = api.catalog.publish(ALICE, "Go west", "X", created_at=at(3))
    assert uris(api.xrpc(SEARCH, q="go")) == [go]


def test_search_punctuation_separates_words(api: Api) -> None:
    literal = api.catalog.publish(ALICE, "100% pure-fun", created_at=at(1))
    other = api.catalog.publish(ALICE, "100 percent purely funny", created_at=at(2))
    assert uris(api.xrpc(SEARCH, q="100% fun")) == [other, literal]
    api.catalog.publish(ALICE, "pure gold", created_at=at(3))
    assert uris(api.xrpc(SEARCH, q="pure-fun")) == [other, literal]


def test_search_follows_updates_and_deletes(api: Api) -> None:
    uri = api.catalog.publish(ALICE, "First name", created_at=at(1))
    assert uris(api.xrpc(SEARCH, q="first")) == [uri]
    rkey = uri.rsplit("/", 1)[1]
    api.catalog.publish(ALICE, "Second name", created_at=at(1), rkey=rkey)
    assert uris(api.xrpc(SEARCH, q="first")) == []
    assert uris(api.xrpc(SEARCH, q="second")) == [uri]
    api.catalog.delete(uri)
    assert uris(api.xrpc(SEARCH, q="second")) == []


def test_search_pages_with_cursor_and_counts_on_first_page(api: Api) -> None:
    made = [api.catalog.publish(ALICE, f"echo {i}", created_at=at(i)) for i in range(5)]
    first = api.xrpc(SEARCH, q="echo", limit=2).json()
    assert first["hitsTotal"] == 5
    second = api.xrpc(SEARCH, q="echo", limit=2, cursor=first["cursor"]).json()
    third = api.xrpc(SEARCH, q="echo", limit=2, cursor=second["cursor"]).json()
    assert "hitsTotal" not in second
    assert "cursor" not in third
    seen = [t["uri"] for page in (first, second, third) for t in page["tracks"]]
    assert seen == made[::-1]


@pytest.mark.parametrize(
    ("q", "message"),
    [
        ("", "is shorter (0) than minLength 1"),
        ("   ", "q has no search terms"),
        ("%!? -", "q has no search terms"),
        ("x" * 257, "is longer (257) than maxLength 256"),
        ("é" * 129, "is longer (258) than maxLength 256"),
        (" ".join("abcdefghi"), "q has 9 terms; at most 8 are allowed"),
    ],
)
def test_bad_search_queries(api: Api, q: str, message: str) -> None:
    response = api.xrpc(SEARCH, q=q)
    assert response.status_code == 400
    assert response.json()["error"] == "InvalidRequest"
    assert message in response.json()["message"]


def test_search_without_q_is_invalid(api: Api) -> None:
    response = api.xrpc(SEARCH)
    assert response.status_code == 400
    assert "missing required property q" in response.json()["message"]


# -- parameters -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=0", "is lower than minimum 1"),
        ("limit=101", "is higher than maximum 100"),
        ("limit=-5", "is lower than minimum 1"),
        ("limit=abc", "parameter 'limit' must be an integer, got 'abc'"),
        ("limit=1.5", "parameter 'limit' must be an integer, got '1.5'"),
        ("limit=", "parameter 'limit' must be an integer, got ''"),
        ("limit=1_0", "parameter 'limit' must be an integer, got '1_0'"),
        ("limit=%D9%A3", "parameter 'limit' must be an integer, got '٣'"),
        ("limit=99999999999999999999", "parameter 'limit' must be an integer"),
        ("limit=5&limit=6", "parameter 'limit' given more than once"),
        ("size=5", "unknown parameter 'size'"),
        ("cursor=" + "A" * 513, "is longer (513) than maxLength 512"),
    ],
)
def test_bad_feed_params(api: Api, query: str, message: str) -> None:
    response = api.client.get(f"/xrpc/{FEED}?{query}")
    assert response.status_code == 400
    assert response.json()["error"] == "InvalidRequest"
    assert message in response.json()["message"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "missing required property actor"),
        ({"actor": ""}, "is invalid for format at-identifier"),
        ({"actor": "not a handle"}, "is invalid for format at-identifier"),
        ({"actor": "did:"}, "is invalid for format at-identifier"),
        ({"actor": ALICE, "limit": "0"}, "is lower than minimum 1"),
    ],
)
def test_bad_actor_params(api: Api, params: dict[str, str], message: str) -> None:
    response = api.xrpc(ACTOR, **params)
    assert response.status_code == 400
    assert response.json()["error"] == "InvalidRequest"
    assert message in response.json()["message"]


def test_limit_bounds_and_defaults(api: Api) -> None:
    for i in range(55):
        api.catalog.publish(ALICE, f"track {i}", created_at=f"2025-01-01T00:{i // 60:02d}:{i % 60:02d}.000Z")
    assert len(uris(api.xrpc(FEED))) == 50
    assert len(uris(api.xrpc(FEED, limit=1))) == 1
    assert len(uris(api.xrpc(FEED, limit=100))) == 55
    assert len(uris(api.xrpc(SEARCH, q="track"))) == 25


def test_unknown_method_is_not_implemented(api: Api) -> None:
    response = api.xrpc("app.relay.feed.getNothing")
    assert response.status_code == 501
    assert response.json() == {
        "error": "MethodNotImplemented",
        "message": "no method 'app.relay.feed.getNothing' here",
    }


# -- cursors --------------------------------------------------------------------------------------------


@pytest.fixture
def page_one(api: Api) -> dict:
    for i in range(3):
        api.catalog.publish(ALICE, created_at=at(i))
    return api.xrpc(FEED, limit=1).json()


@pytest.mark.parametrize(
    "cursor",
    ["", "abc", "a.b", ".", "é.é", "WzFd.AAAAAAAAAAAAAAAA", "!!!.???"],
)
def test_malformed_cursor_is_rejected(api: Api, page_one: dict, cursor: str) -> None:
    response = api.xrpc(FEED, cursor=cursor)
    assert response.status_code == 400
    assert response.json() == {
        "error": "InvalidRequest",
        "message": "cursor is malformed or was not issued for this query",
    }


def test_forged_cursor_is_rejected(api: Api, page_one: dict) -> None:
    body, tag = page_one["cursor"].split(".")
    key = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    forged = base64.urlsafe_b64encode(key.replace(b"[", b"[1", 1)).rstrip(b"=").decode()
    response = api.xrpc(FEED, cursor=f"{forged}.{tag}")
    assert response.status_code == 400
    assert response.json()["error"] == "InvalidRequest"


def test_cursor_from_another_query_is_rejected(api: Api, page_one: dict) -> None:
    assert api.xrpc(FEED, cursor=page_one["cursor"]).status_code == 200
    actor = api.xrpc(ACTOR, actor=ALICE, cursor=page_one["cursor"])
    search = api.xrpc(SEARCH, q="song", cursor=page_one["cursor"])
    assert (actor.status_code, actor.json()["error"]) == (400, "InvalidRequest")
    assert (search.status_code, search.json()["error"]) == (400, "InvalidRequest")
    other_q = api.xrpc(SEARCH, q="song", limit=1).json()["cursor"]
    assert api.xrpc(SEARCH, q="SONG", cursor=other_q).status_code == 200  # same terms, same query
    assert api.xrpc(SEARCH, q="artist", cursor=other_q).status_code == 400


def test_cursor_secret_persists_across_restarts(tmp_path: Path) -> None:
    db = tmp_path / "api.duckdb"
    servers = start_api(db)
    api = next(servers)
    for i in range(2):
        api.catalog.publish(ALICE, created_at=at(i))
    cursor = api.xrpc(FEED, limit=1).json()["cursor"]
    servers.close()
    servers = start_api(db)
    again = next(servers)
    assert again.xrpc(FEED, cursor=cursor, limit=1).status_code == 200
    servers.close()
    servers = start_api(db, RELAY_CURSOR_SECRET="configured elsewhere")
    other = next(servers)
    assert other.xrpc(FEED, cursor=cursor, limit=1).status_code == 400
    servers.close()


# -- service routes -------------------------------------------------------------------------------------


def test_health_reports_version_cursor_and_lag(api: Api) -> None:
    assert api.get("/xrpc/_health").json() == {"version": "0.1.0", "cursor": None, "lagSeconds": None}
    api.store.rewind(1_700_000_000_000_000, "replay")
    body = api.get("/xrpc/_health").json()
    assert body["cursor"] == 1_700_000_000_000_000
    assert body["lagSeconds"] > 0


def test_health_is_503_when_the_database_is_gone(api: Api) -> None:
    api.catalog.publish(ALICE)
    assert api.get("/xrpc/_health").status_code == 200
    api.store.close()
    response = api.get("/xrpc/_health")
    assert response.status_code == 503
    assert response.json()["error"] == "DatabaseUnavailable"
    for nsid, params in ((FEED, {"limit": 3}), (ACTOR, {"actor": ALICE}), (SEARCH, {"q": "x"})):
        failed = api.xrpc(nsid, **params)
        assert failed.status_code == 503
        assert failed.json() == {"error": "DatabaseUnavailable", "message": "the index is unavailable"}


def test_unexpected_failure_is_a_bare_500_logged_once(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    api.catalog.publish(ALICE)
    api.store.reader().execute("DROP INDEX accounts_handle")
    api.store.reader().execute("ALTER TABLE accounts RENAME COLUMN handle TO name")  # a schema the code cannot read
    with caplog.at_level(logging.ERROR, logger="appview_api.xrpc"):
        response = api.xrpc(FEED, limit=7)
    assert response.status_code == 500
    assert response.json() == {"error": "InternalServerError", "message": "internal error"}
    [logged] = [r.getMessage() for r in caplog.records]
    assert logged.startswith("request failed path=/xrpc/app.relay.feed.getTracks error=StoreError reason=database error: ")


def test_did_document_names_the_service(api: Api) -> None:
    assert api.get("/.well-known/did.json").json() == {
        "@context": ["https://www.w3.org/ns/did/v1"],
        "id": "did:web:appview.relay.test",
        "service": [{"id": "#relay_appview", "type": "RelayAppView", "serviceEndpoint": PUBLIC_URL}],
    }


def test_cors_is_open_for_get(api: Api) -> None:
    simple = api.client.get(f"/xrpc/{FEED}", headers={"Origin": "https://elsewhere.test"})
    assert simple.headers["access-control-allow-origin"] == "*"
    preflight = api.client.options(
        f"/xrpc/{FEED}",
        headers={"Origin": "https://elsewhere.test", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "GET" in preflight.headers["access-control-allow-methods"]


def test_metrics_count_requests_by_endpoint_not_path(api: Api) -> None:
    api.xrpc(FEED)
    api.xrpc(FEED, limit=0)
    api.get("/xrpc/app.relay.unknown.thing")
    api.get("/some/random/path")
    api.get("/")
    api.get(f"/track/{ALICE}/3jzfcijpj2z2a")
    text = api.get("/metrics").text
    assert re.search(r'relay_http_requests_total\{endpoint="app.relay.feed.getTracks",status="200"\} [1-9]', text)
    assert re.search(r'relay_http_requests_total\{endpoint="app.relay.feed.getTracks",status="400"\} [1-9]', text)
    assert re.search(r'relay_http_requests_total\{endpoint="xrpc_unknown",status="501"\} [1-9]', text)
    assert re.search(r'relay_http_requests_total\{endpoint="other",status="404"\} [1-9]', text)
    assert re.search(r'relay_http_requests_total\{endpoint="/",status="200"\} [1-9]', text)  # the web pages
    assert re.search(r'relay_http_requests_total\{endpoint="/track/",status="404"\} [1-9]', text)
    assert 'relay_http_request_duration_seconds_bucket{endpoint="app.relay.feed.getTracks"' in text
    assert "random/path" not in text and "unknown.thing" not in text and "3jzfcijpj2z2a" not in text
    assert "relay_events_received_total" in text  # the indexer's counters share the registry


@pytest.mark.parametrize("path", ["/xrpc/app.relay.feed.getTracks/", "/xrpc/_health/", "/.well-known/did.json/"])
def test_a_trailing_slash_is_a_404_not_a_redirect_built_from_the_host_header(api: Api, path: str) -> None:
    response = api.client.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.json()["error"] == "NotFound"
