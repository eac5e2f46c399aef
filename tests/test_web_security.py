"""CSRF, open-redirect and cookie attacks on the pages, each refused with its exact answer.

The first half needs nobody signed in (the served API, fast); the second signs a person in at the real
PDS and attacks what they can do (slow).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.api import Api, start_api
from tests.fixtures.pds import LocalPds
from tests.fixtures.publish import DATA, PublishService
from tests.fixtures.web import Visitor

CROSS_SITE = "cross-site form posts are refused"
EXPIRED = "this form has expired or did not come from this site: reload the page and try again"
OFF_SITE = "the return path must be a path on this site"


def error_of(response: httpx.Response) -> tuple[int, str]:
    found = re.search(r'<p class="error" role="alert">(.*?)</p>', response.text, re.S)
    assert found is not None, response.text
    return response.status_code, html.unescape(found.group(1).strip())


def csrf_of(client: httpx.Client, path: str = "/signin") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found is not None
    return found.group(1)


# --- nobody signed in ---------------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """The served app as a development deployment: the loopback client, so sign-in forms are shown."""
    yield from start_api(tmp_path / "api.duckdb", public_url="http://127.0.0.1:8080")


def test_a_form_post_without_the_browsers_token_is_refused(api: Api) -> None:
    token = csrf_of(api.client)
    form = {"identifier": "alice.test", "return_to": "/"}

    assert error_of(api.client.post("/signin", data=form)) == (403, EXPIRED)
    assert error_of(api.client.post("/signin", data=form | {"csrf": "x" * 43})) == (403, EXPIRED)
    api.client.cookies.clear()
    assert error_of(api.client.post("/signin", data=form | {"csrf": token})) == (403, EXPIRED)  # no cookie


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example.test"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
    ids=["foreign-origin", "opaque-origin", "cross-site", "same-site"],
)
def test_a_form_post_a_browser_says_came_from_elsewhere_is_refused_even_with_the_token(
    api: Api, headers: dict[str, str]
) -> None:
    token = csrf_of(api.client)
    answer = api.client.post("/signin", data={"csrf": token, "identifier": "alice.test"}, headers=headers)
    assert error_of(answer) == (403, CROSS_SITE)


def test_the_csrf_cookie_is_httponly_and_lax(api: Api) -> None:
    page = api.get("/signin")
    [cookie] = page.headers.get_list("set-cookie")
    assert re.fullmatch(r"relay_csrf=[A-Za-z0-9_-]{43}; HttpOnly; Path=/; SameSite=lax", cookie)


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example.test/",
        "//evil.example.test/",
        "/\\evil.example.test/",
        "\\\\evil.example.test",
        "http:/evil.example.test",
        "javascript:alert(1)",
        "/ok\r\nSet-Cookie: x=1",
        " /padded",
        "evil.example.test",
    ],
)
def test_a_return_path_off_this_site_is_refused(api: Api, target: str) -> None:
    assert error_of(api.get("/signin", return_to=target)) == (400, OFF_SITE)
    token = csrf_of(api.client)
    answer = api.client.post("/signin", data={"csrf": token, "identifier": "alice.test", "return_to": target})
    assert error_of(answer) == (400, OFF_SITE)
    assert "location" not in answer.headers


def test_a_return_path_on_this_site_is_kept(api: Api) -> None:
    page = api.get("/signin", return_to="/profile/alice.test?cursor=x")
    assert page.status_code == 200
    assert 'name="return_to" value="/profile/alice.test?cursor=x"' in page.text


# --- a person signed in -------------------------------------------------------------------------------


@pytest.mark.slow
def test_signed_in_forms_refuse_posts_without_the_token_or_from_elsewhere(
    web: PublishService, visitor: Visitor, local_pds: LocalPds
) -> None:
    account = local_pds.create_account("victim")
    assert visitor.sign_in(account).status_code == 303
    token = csrf_of(visitor.client, "/upload")
    files = {"audio": ("a.mp3", (DATA / "tone-3s.mp3").read_bytes(), "audio/mpeg")}
    fields = {"title": "Forged", "artist": "Someone"}

    no_token = visitor.client.post("/upload", data=fields, files=files)
    foreign = visitor.client.post(
        "/upload", data=fields | {"csrf": token}, files=files, headers={"Origin": "https://evil.example.test"}
    )
    sign_out = visitor.client.post("/signout", data={"next": "/"})

    assert error_of(no_token) == (403, EXPIRED)
    assert error_of(foreign) == (403, CROSS_SITE)
    assert error_of(sign_out) == (403, EXPIRED)
    assert web.store.reader().execute("SELECT count(*) FROM oauth_sessions").fetchone() == (1,)  # still signed in
    assert web.nothing_left(account)


@pytest.mark.slow
def test_sign_in_and_sign_out_rotate_the_csrf_token(visitor: Visitor, local_pds: LocalPds) -> None:
    account = local_pds.create_account("rotate")
    before = csrf_of(visitor.client)
    assert visitor.sign_in(account).status_code == 303
    during = visitor.client.cookies["relay_csrf"]
    assert during != before

    assert error_of(visitor.client.post("/signout", data={"csrf": before})) == (403, EXPIRED)
    assert visitor.client.post("/signout", data={"csrf": during}).status_code == 303
    assert visitor.client.cookies["relay_csrf"] != during
