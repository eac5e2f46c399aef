"""The reading pages over the real app and the same catalog as the XRPC API: what they show, in which
order, how they page, their headers, their errors, and that every string from a record stays text."""

from __future__ import annotations

import html
import re

import httpx

from appview_api.pages.render import day, duration
from tests.fixtures.api import ACTOR, ALICE, BOB, FEED, SEARCH, Api, at, uris

XSS = "<script>alert(1)</script>"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' https:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def page_tracks(response: httpx.Response) -> list[str]:
    """The track pages a list links to, in order, as at:// URIs."""
    assert response.status_code == 200, response.text
    found = re.findall(r'<h3 id="[^"]+"><a href="/track/([^/"]+)/([^"]+)">', response.text)
    return [f"at://{did}/app.relay.track/{rkey}" for did, rkey in found]


def more_link(response: httpx.Response) -> str | None:
    found = re.search(r'<a href="([^"]+)" rel="next">More tracks</a>', response.text)
    return html.unescape(found.group(1)) if found else None


def error_of(response: httpx.Response) -> tuple[int, str]:
    found = re.search(r'<p class="error" role="alert">(.*?)</p>', response.text, re.S)
    assert found is not None, response.text
    return response.status_code, html.unescape(found.group(1).strip())


def test_the_feed_lists_the_apis_discovery_order_and_pages_by_its_cursor(api: Api) -> None:
    for second in range(30):
        api.catalog.publish(ALICE if second % 2 else BOB, f"Song {second}", created_at=at(second))
    api.catalog.handle(ALICE, "alice.test")

    first = api.get("/")
    second = api.client.get(more_link(first) or "/missing")

    xrpc_first = api.xrpc(FEED, limit=25)
    assert page_tracks(first) == uris(xrpc_first)
    assert more_link(first) == f"/?cursor={xrpc_first.json()['cursor']}"
    assert page_tracks(second) == uris(api.xrpc(FEED, limit=25, cursor=xrpc_first.json()["cursor"]))
    assert len(page_tracks(second)) == 5 and more_link(second) is None
    assert first.headers["content-type"] == "text/html; charset=utf-8"


def test_a_track_shows_its_fields_a_player_and_its_author(api: Api) -> None:
    uri = api.catalog.publish(ALICE, "Blue River", "The Fixtures", album="Loopback", duration=245)
    api.catalog.handle(ALICE, "alice.test")
    rkey = uri.rsplit("/", 1)[1]

    feed = api.get("/").text

    assert f'<a href="/track/{ALICE}/{rkey}">Blue River</a>' in feed
    assert '<span class="artist">The Fixtures</span>' in feed and '<span class="album">Loopback</span>' in feed
    assert '<span class="duration" aria-label="Duration 4:05">4:05</span>' in feed
    assert '<a href="/profile/alice.test">@alice.test</a>' in feed
    assert (
        f'<audio controls preload="none" src="https://cdn.relay.test/{rkey}.mp3" '
        'aria-label="Play Blue River by The Fixtures"></audio>'
    ) in feed


def test_search_answers_what_the_api_answers(api: Api) -> None:
    api.catalog.publish(ALICE, "Blue River")
    api.catalog.publish(BOB, "Red River", album="Blue")
    api.catalog.publish(BOB, "Green Hill")

    found = api.get("/", q="blue")

    assert page_tracks(found) == uris(api.xrpc(SEARCH, q="blue", limit=25))
    assert '<p class="count">2 found</p>' in found.text
    assert 'value="blue"' in found.text
    assert "No tracks match that search." in api.get("/", q="purple").text


def test_a_profile_lists_its_accounts_tracks_by_handle_or_did(api: Api) -> None:
    api.catalog.publish(ALICE, "One", created_at=at(1))
    api.catalog.publish(ALICE, "Two", created_at=at(2))
    api.catalog.publish(BOB, "Other")
    api.catalog.handle(ALICE, "alice.test")

    by_handle, by_did = api.get("/profile/alice.test"), api.get(f"/profile/{ALICE}")

    assert page_tracks(by_handle) == page_tracks(by_did) == uris(api.xrpc(ACTOR, actor=ALICE, limit=25))
    assert "<h1>@alice.test</h1>" in by_handle.text and f"<code>{ALICE}</code>" in by_handle.text
    assert error_of(api.get("/profile/nobody.test")) == (404, "no indexed account 'nobody.test'")


def test_a_track_page_is_shareable_with_opengraph_tags(api: Api) -> None:
    uri = api.catalog.publish(ALICE, "Blue River", "The Fixtures", album="Loopback", duration=245)
    api.catalog.handle(ALICE, "alice.test")
    rkey = uri.rsplit("/", 1)[1]

    page = api.get(f"/track/{ALICE}/{rkey}")

    assert page.status_code == 200
    for tag in (
        '<meta property="og:type" content="music.song">',
        '<meta property="og:title" content="Blue River — The Fixtures">',
        '<meta property="og:description" content="Loopback · shared by @alice.test">',
        f'<meta property="og:url" content="https://appview.relay.test/track/{ALICE}/{rkey}">',
        f'<meta property="og:audio" content="https://cdn.relay.test/{rkey}.mp3">',
        '<meta property="og:audio:type" content="audio/mpeg">',
        '<meta property="music:duration" content="245">',
    ):
        assert tag in page.text
    assert "<title>Blue River by The Fixtures · relay</title>" in page.text
    assert f'<code class="uri">{uri}</code>' in page.text
    assert "Edit</a>" not in page.text  # nobody is signed in


def test_only_verified_tracks_are_shown(api: Api) -> None:
    shown = api.catalog.publish(ALICE, "Checked")
    pending = api.catalog.publish(ALICE, "Unchecked", audio=None)
    gone = api.catalog.publish(ALICE, "Missing", audio="unavailable")

    assert page_tracks(api.get("/")) == [shown]
    for uri in (pending, gone):
        assert error_of(api.get("/track/" + uri.removeprefix("at://").replace("/app.relay.track/", "/"))) == (
            404, f"no visible track at {uri}"
        )


def test_every_string_from_a_record_is_shown_as_text(api: Api) -> None:
    uri = api.catalog.publish(ALICE, XSS, '"><img src=x onerror=alert(2)>', album="</pre><script>x</script>")
    api.catalog.handle(ALICE, "alice.test")
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"

    for path in ("/", "/?q=script", "/profile/alice.test", "/track/" + uri.removeprefix("at://").replace("/app.relay.track/", "/")):
        page = api.get(path)
        assert page.status_code == 200, path
        assert escaped in page.text, path
        assert "<script>alert" not in page.text and "<img src=x" not in page.text and "<script>x" not in page.text
        assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/static/player.js" defer>']
    track_page = api.get("/track/" + uri.removeprefix("at://").replace("/app.relay.track/", "/")).text
    assert f'<meta property="og:title" content="{escaped} — &#34;&gt;&lt;img src=x onerror=alert(2)&gt;">' in track_page


def test_pages_carry_a_csp_without_inline_script_and_the_other_safety_headers(api: Api) -> None:
    page = api.get("/")

    assert page.headers["content-security-policy"] == CSP
    assert (page.headers["x-content-type-options"], page.headers["x-frame-options"]) == ("nosniff", "DENY")
    assert page.headers["referrer-policy"] == "same-origin"
    assert "set-cookie" not in page.headers  # nothing to protect on a page without forms
    sign_in = api.get("/signin")
    assert "form-action 'self' https:;" in sign_in.headers["content-security-policy"]  # to the person's own server


def test_errors_on_pages_are_pages_and_errors_elsewhere_stay_json(api: Api) -> None:
    missing = api.get("/no/such/page")
    assert missing.headers["content-type"] == "text/html; charset=utf-8"
    assert error_of(missing) == (404, "there is no page at this address")
    assert error_of(api.get("/", cursor="forged")) == (400, "cursor is malformed or was not issued for this query")
    assert error_of(api.get("/", q="!!!")) == (400, "q has no search terms")
    assert error_of(api.get("/track/not-a-did/3jzfcijpj2z2a")) == (404, "there is no track at this address")
    assert api.get("/xrpc/app.relay.nope").json() == {
        "error": "MethodNotImplemented", "message": "no method 'app.relay.nope' here"
    }
    audio = api.get("/audio/" + "0" * 64 + ".mp3")
    assert (audio.status_code, audio.json()["error"]) == (404, "NotFound")


def test_sign_in_says_why_it_is_unavailable_without_a_session_secret(api: Api) -> None:
    page = api.get("/signin")

    assert error_of(page) == (
        200, "sign-in is not set up on this server: its operator must set RELAY_SESSION_SECRET"
    )
    assert api.get("/oauth-client-metadata.json").json() == {
        "error": "NotFound",
        "message": "this server signs people in as atproto's loopback development client: no metadata here",
    }


def test_upload_sends_a_visitor_who_is_not_signed_in_to_sign_in(api: Api) -> None:
    answer = api.get("/upload")
    assert (answer.status_code, answer.headers["location"]) == (303, "/signin?return_to=/upload")
    edit = api.get(f"/track/{ALICE}/3jzfcijpj2z2a/edit")
    assert (edit.status_code, edit.headers["location"]) == (303, f"/signin?return_to=%2Ftrack%2F{ALICE.replace(':', '%3A')}%2F3jzfcijpj2z2a%2Fedit")


def test_the_static_files_are_served_with_their_types(api: Api) -> None:
    css, js = api.get("/static/style.css"), api.get("/static/player.js")
    assert (css.status_code, css.headers["content-type"]) == (200, "text/css; charset=utf-8")
    assert (js.status_code, js.headers["content-type"]) == (200, "text/javascript; charset=utf-8")
    assert "pause" in js.text


def test_durations_and_days_as_pages_show_them() -> None:
    assert [duration(v) for v in (0, 59, 245, 3600, None, -1, "7")] == ["0:00", "0:59", "4:05", "60:00", "", "", ""]
    assert [day(v) for v in ("2025-10-28T22:30:00.000Z", "2025-10-28T23:30:00-05:00", "28/10/2025", None)] == [
        "2025-10-28", "2025-10-28", "", ""
    ]
