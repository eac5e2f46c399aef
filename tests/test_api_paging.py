"""Keyset paging while the index changes underneath, and fuzzed query strings that must never yield a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.api import ALICE, BOB, Api, start_api
from tests.servers.events import iso, now_us

NSIDS = (
    "app.relay.feed.getTracks",
    "app.relay.actor.getTracks",
    "app.relay.track.getTrack",
    "app.relay.feed.searchTracks",
)

pytestmark = pytest.mark.slow  # end to end: real processes and servers


def at(minute: int, second: int = 0) -> str:
    return f"2025-01-01T00:{minute:02d}:{second:02d}.000Z"


def walk(api: Api, nsid: str, between: Iterator[None], **params: object) -> list[dict]:
    """Every track of every page, running one step of `between` after each page."""
    tracks, cursor = [], None
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        response = api.xrpc(nsid, **query)
        assert response.status_code == 200, response.text
        body = response.json()
        tracks += body["tracks"]
        cursor = body.get("cursor")
        if cursor is None:
            return tracks
        next(between, None)


@pytest.mark.parametrize(
    ("nsid", "params"), [("app.relay.feed.getTracks", {}), ("app.relay.actor.getTracks", {"actor": ALICE})]
)
def test_paging_survives_concurrent_inserts(api: Api, nsid: str, params: dict) -> None:
    before = [api.catalog.publish(ALICE, f"old {i}", created_at=at(10, i)) for i in range(23)]
    # Same createdAt for several rows: the (did, rkey) tiebreak must still order them totally.
    before += [api.catalog.publish(ALICE, f"tie {i}", created_at=at(5)) for i in range(4)]

    def inserts() -> Iterator[None]:
        minute = 0
        while True:
            api.catalog.publish(ALICE, "newest", created_at=iso(now_us()))  # lands above the cursor
            api.catalog.publish(ALICE, "older", created_at=at(minute, 30))  # lands below it
            api.catalog.publish(BOB, "other", created_at=at(10, 5))
            minute += 1
            yield

    seen = walk(api, nsid, inserts(), limit=4, **params)
    uris = [track["uri"] for track in seen]
    assert len(uris) == len(set(uris)), "a row was served twice"
    assert set(before) <= set(uris), "a row that existed before paging began was skipped"
    keys = [min(t["createdAt"], t["indexedAt"]) for t in seen]
    assert keys == sorted(keys, reverse=True)


def test_search_paging_survives_concurrent_inserts(api: Api) -> None:
    before = [api.catalog.publish(ALICE, f"river {i}", created_at=at(1, i)) for i in range(9)]
    before += [api.catalog.publish(ALICE, "river", created_at=at(2, i)) for i in range(3)]

    def inserts() -> Iterator[None]:
        while True:
            api.catalog.publish(ALICE, "river", created_at=iso(now_us()))  # best score, newest: above
            api.catalog.publish(ALICE, "river late", created_at=at(0, 1))
            yield

    uris = [t["uri"] for t in walk(api, "app.relay.feed.searchTracks", inserts(), q="river", limit=2)]
    assert len(uris) == len(set(uris))
    assert set(before) <= set(uris)


def test_a_deleted_cursor_row_does_not_break_paging(api: Api) -> None:
    made = [api.catalog.publish(ALICE, created_at=at(1, i)) for i in range(6)]
    first = api.xrpc("app.relay.feed.getTracks", limit=2).json()
    api.catalog.delete(made[4])  # the last row the first page showed
    rest = api.xrpc("app.relay.feed.getTracks", limit=10, cursor=first["cursor"]).json()
    assert [t["uri"] for t in rest["tracks"]] == made[3::-1]


# -- fuzz -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    servers = start_api(Path(tmp_path_factory.mktemp("fuzz")) / "api.duckdb")
    api = next(servers)
    for i in range(12):
        api.catalog.publish(
            ALICE if i % 2 else BOB, f"title {i} ünï", f"artist {i}", album="a%b_c", created_at=at(1, i)
        )
    api.catalog.handle(ALICE, "alice.test")
    yield api
    servers.close()


names = st.sampled_from(["limit", "cursor", "actor", "uri", "q", "x", "", "LIMIT", "q[]"]) | st.text(max_size=8)
values = (
    st.text(max_size=300)
    | st.integers(-(2**70), 2**70).map(str)
    | st.sampled_from(["did:plc:" + "a" * 24, "alice.test", "at://alice.test/app.relay.track/x", "%", "0", "100"])
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(nsid=st.sampled_from(NSIDS), pairs=st.lists(st.tuples(names, values), max_size=4))
def test_fuzzed_params_never_fail_the_server(fuzz_api: Api, nsid: str, pairs: list[tuple[str, str]]) -> None:
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
    response = fuzz_api.client.get(f"/xrpc/{nsid}?{query}")
    assert response.status_code in (200, 400, 404), response.text
    body = response.json()
    if response.status_code == 200:
        assert "tracks" in body or "track" in body
    else:
        assert body["error"] in ("InvalidRequest", "ActorNotFound", "TrackNotFound")
        assert isinstance(body["message"], str)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_fuzzed_raw_query_bytes_never_fail_the_server(fuzz_api: Api, raw: bytes) -> None:
    query = quote(raw, safe="=&%+")  # keep the separators and stray escapes the raw bytes happen to hold
    response = fuzz_api.client.get(f"/xrpc/app.relay.feed.searchTracks?{query}")
    assert response.status_code in (200, 400), response.text
    assert response.headers["content-type"] == "application/json"


def test_search_paging_through_ties_on_score_and_time(api: Api) -> None:
    same = [api.catalog.publish(ALICE if i % 2 else BOB, "twin", created_at=at(3)) for i in range(7)]
    seen = [t["uri"] for t in walk(api, "app.relay.feed.searchTracks", iter(()), q="twin", limit=2)]
    assert sorted(seen) == sorted(same)
    assert len(seen) == len(set(seen))
