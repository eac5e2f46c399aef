"""The error table, the handlers that render it, and query parameters parsed by their lexicon."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from appview_api import errors
from appview_api.xrpc import ERRORS, EXCEPTION_HANDLERS, answer, method
from indexer.errors import ConfigError, RelayError, StoreError, StoreUnavailable

FEED = "app.relay.feed.getTracks"
PUBLISH = "app.relay.track.publish"  # the one method with a boolean parameter (dryRun)


def instance(cls: type[RelayError]) -> RelayError:
    if cls is errors.RateLimited:
        return errors.RateLimited(30)
    if cls is errors.ExpiredToken:
        return errors.ExpiredToken()
    return cls("reason")


@pytest.mark.parametrize(("cls", "expected"), list(ERRORS.items()), ids=[cls.__name__ for cls in ERRORS])
def test_every_listed_error_answers_its_name_and_status(cls: type[RelayError], expected: tuple[str, int]) -> None:
    assert answer(instance(cls)) == expected


class TooSlow(errors.PdsBusy):
    pass


class BadCursor(errors.InvalidRequest):
    pass


class Locked(StoreUnavailable):
    pass


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TooSlow("x"), ("PdsUnavailable", 503)),
        (BadCursor("x"), ("InvalidRequest", 400)),
        (Locked("x"), ("DatabaseUnavailable", 503)),
        (errors.RequestError("x"), ("InternalServerError", 500)),  # the family's root is not listed
        (ConfigError("x"), ("InternalServerError", 500)),
    ],
)
def test_an_unlisted_error_answers_as_its_nearest_listed_base(exc: RelayError, expected: tuple[str, int]) -> None:
    assert answer(exc) == expected


async def request(exc: Exception, method: str = "GET", path: str = "/xrpc/boom") -> httpx.Response:
    """One request to a tiny app whose one route raises `exc`."""

    async def boom(request: Request) -> None:
        raise exc

    app = Starlette(routes=[Route("/xrpc/boom", boom)], exception_handlers=EXCEPTION_HANDLERS)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, path)


@pytest.mark.parametrize(
    ("exc", "status", "body"),
    [
        (errors.InvalidRequest("limit must be 1 to 100"), 400, {"error": "InvalidRequest", "message": "limit must be 1 to 100"}),
        (errors.ExpiredToken(), 401, {"error": "ExpiredToken", "message": "the access token has expired: refresh the session"}),
        (errors.PdsBusy("the PDS answered 503"), 503, {"error": "PdsUnavailable", "message": "the PDS answered 503"}),
        (errors.StorageError("the bucket refused the upload"), 503, {"error": "StorageUnavailable", "message": "the bucket refused the upload"}),
        (StoreUnavailable("the database is unavailable: /srv/relay.duckdb locked"), 503, {"error": "DatabaseUnavailable", "message": "the index is unavailable"}),
        (StoreError("database error: Constraint Error: duplicate key in tracks"), 500, {"error": "InternalServerError", "message": "internal error"}),
        (ConfigError("RELAY_SECRET is malformed"), 500, {"error": "InternalServerError", "message": "internal error"}),
        (RuntimeError("a bug with internals"), 500, {"error": "InternalServerError", "message": "internal error"}),
    ],
)
async def test_errors_render_as_xrpc_json(exc: Exception, status: int, body: dict[str, str]) -> None:
    response = await request(exc)
    assert (response.status_code, response.headers["content-type"], response.json()) == (status, "application/json", body)
    assert "retry-after" not in response.headers


async def test_rate_limited_carries_retry_after() -> None:
    response = await request(errors.RateLimited(42))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "42"
    assert response.json() == {"error": "RateLimitExceeded", "message": "too many writes: retry in 42 s"}


async def test_store_error_reason_is_logged_not_shown(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="appview_api.xrpc"):
        response = await request(StoreError("database error: secret detail"))
    assert "secret detail" not in response.text
    assert [r.getMessage() for r in caplog.records] == [
        "request failed path=/xrpc/boom error=StoreError reason=database error: secret detail"
    ]


async def test_starlette_refusals_use_the_same_shape() -> None:
    missing = await request(RuntimeError("unused"), path="/xrpc/app.relay.nothing")
    assert (missing.status_code, missing.json()) == (404, {"error": "NotFound", "message": "Not Found"})
    wrong = await request(RuntimeError("unused"), method="POST")
    assert (wrong.status_code, wrong.json()) == (405, {"error": "MethodNotAllowed", "message": "Method Not Allowed"})
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD"}  # Starlette joins a set: any order


def test_parse_coerces_and_fills_defaults() -> None:
    assert method(FEED).parse([]) == {"limit": 50}
    assert method(FEED).parse([("limit", "10"), ("cursor", "abc")]) == {"limit": 10, "cursor": "abc"}
    assert method(PUBLISH).parse([]) == {"dryRun": False}
    assert method(PUBLISH).parse([("dryRun", "true")]) == {"dryRun": True}


@pytest.mark.parametrize(
    ("nsid", "query", "message"),
    [
        (FEED, [("limit", "ten")], "parameter 'limit' must be an integer, got 'ten'"),
        (FEED, [("limit", "1_0")], "parameter 'limit' must be an integer, got '1_0'"),
        (FEED, [("limit", " 7")], "parameter 'limit' must be an integer, got ' 7'"),
        (FEED, [("limit", "٣")], "parameter 'limit' must be an integer, got '٣'"),  # non-ASCII digit
        (FEED, [("limit", "1" * 19)], f"parameter 'limit' must be an integer, got '{'1' * 19}'"),
        (FEED, [("limit", "")], "parameter 'limit' must be an integer, got ''"),
        (FEED, [("limit", "x" * 80)], f"parameter 'limit' must be an integer, got '{'x' * 50}'"),
        (PUBLISH, [("dryRun", "yes")], "parameter 'dryRun' must be true or false, got 'yes'"),
        (PUBLISH, [("dryRun", "True")], "parameter 'dryRun' must be true or false, got 'True'"),
        (FEED, [("actor", "alice.bsky.social")], "unknown parameter 'actor'"),
        (FEED, [("y" * 80, "1")], f"unknown parameter '{'y' * 50}'"),
        (FEED, [("limit", "1"), ("limit", "2")], "parameter 'limit' given more than once"),
        (FEED, [("limit", "0")], "in app.relay.feed.getTracks, integer limit with value `0`: is lower than minimum 1"),
        (FEED, [("limit", "101")], "in app.relay.feed.getTracks, integer limit with value `101`: is higher than maximum 100"),
        ("app.relay.actor.getTracks", [], "app.relay.actor.getTracks parameters with value `{}`: missing required property actor"),
    ],
)
def test_parse_refusals_name_the_parameter(nsid: str, query: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        method(nsid).parse(query)
    assert caught.value.reason == message


def test_a_lexicon_that_is_not_a_method_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        method("app.relay.track")
    assert caught.value.reason == "app.relay.track: not a query or procedure lexicon"
