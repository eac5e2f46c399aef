"""The in-memory catalog against the real write path while it runs: every change the indexer commits (new
tracks, audio verdicts, deletes, takedowns, purges, handles) shows in the very next response, nothing that
is not verified and visible ever shows, and a restart loads the same catalog back."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.fixtures.api import ACTOR, ALICE, BOB, CAROL, FEED, SEARCH, TRACK, Api, at, start_api, uris

pytestmark = pytest.mark.slow  # end to end: real processes and servers


def everywhere(api: Api, uri: str, did: str, q: str) -> dict[str, bool]:
    """Where a track shows: discovery, its author's list, search, and lookup."""
    return {
        "feed": uri in uris(api.xrpc(FEED, limit=100)),
        "actor": uri in uris(api.xrpc(ACTOR, actor=did, limit=100)),
        "search": uri in uris(api.xrpc(SEARCH, q=q, limit=100)),
        "track": api.xrpc(TRACK, uri=uri).status_code == 200,
    }


SHOWN = dict.fromkeys(("feed", "actor", "search", "track"), True)
GONE = dict.fromkeys(("feed", "actor", "search", "track"), False)


def test_a_track_shows_once_its_audio_is_verified(api: Api) -> None:
    uri = api.catalog.publish(ALICE, "Late bloom", audio=None)
    assert everywhere(api, uri, ALICE, "bloom") == GONE
    api.catalog.audio(f"https://cdn.relay.test/{uri.rsplit('/', 1)[1]}.mp3", "verified")
    assert everywhere(api, uri, ALICE, "bloom") == SHOWN
    api.catalog.audio(f"https://cdn.relay.test/{uri.rsplit('/', 1)[1]}.mp3", "unavailable")  # a recheck failed
    assert everywhere(api, uri, ALICE, "bloom") == GONE


def test_delete_takedown_and_purge_are_gone_from_the_next_response(api: Api) -> None:
    deleted = api.catalog.publish(ALICE, "Gone soon")
    taken = api.catalog.publish(BOB, "Gone soon")
    purged = api.catalog.publish(CAROL, "Gone soon")
    for uri, did in ((deleted, ALICE), (taken, BOB), (purged, CAROL)):
        assert everywhere(api, uri, did, "gone") == SHOWN
    api.catalog.delete(deleted)
    assert everywhere(api, deleted, ALICE, "gone") == GONE
    api.catalog.account(BOB, active=False, status="takendown")
    assert everywhere(api, taken, BOB, "gone") == GONE
    api.catalog.account(CAROL, active=False, status="deleted")
    assert everywhere(api, purged, CAROL, "gone") == GONE
    api.catalog.account(BOB, active=True)
    assert everywhere(api, taken, BOB, "gone") == SHOWN
    api.catalog.account(CAROL, active=True)  # a purge is final: the records were erased
    assert everywhere(api, purged, CAROL, "gone") == GONE


def test_an_update_replaces_the_old_words_and_fields(api: Api) -> None:
    uri = api.catalog.publish(ALICE, "Draft title", album="Demo", created_at=at(1))
    rkey = uri.rsplit("/", 1)[1]
    api.catalog.publish(ALICE, "Final title", created_at=at(1), rkey=rkey)
    assert uris(api.xrpc(SEARCH, q="draft")) == [] and uris(api.xrpc(SEARCH, q="demo")) == []
    track = api.xrpc(TRACK, uri=uri).json()["track"]
    assert (track["title"], "album" in track) == ("Final title", False)
    assert uris(api.xrpc(FEED)) == [uri]


def test_handle_changes_show_in_views_and_lookups(api: Api) -> None:
    uri = api.catalog.publish(ALICE, "Named")
    api.catalog.handle(ALICE, "alice.test")
    assert api.xrpc(TRACK, uri=uri).json()["track"]["author"] == {"did": ALICE, "handle": "alice.test"}
    api.catalog.handle(ALICE, "alice2.test")
    assert api.xrpc(FEED).json()["tracks"][0]["author"] == {"did": ALICE, "handle": "alice2.test"}
    assert uris(api.xrpc(ACTOR, actor="alice2.test")) == [uri]
    gone = api.xrpc(ACTOR, actor="alice.test")
    assert (gone.status_code, gone.json()["error"]) == (400, "ActorNotFound")
    api.catalog.handle(ALICE, None)  # the DID document stopped naming a valid handle
    assert api.xrpc(FEED).json()["tracks"][0]["author"] == {"did": ALICE}


def test_a_handle_two_accounts_claim_goes_to_the_latest_resolution(api: Api) -> None:
    alices = api.catalog.publish(ALICE, "From alice")
    bobs = api.catalog.publish(BOB, "From bob")
    api.catalog.handle(ALICE, "shared.test")
    api.catalog.handle(BOB, "shared.test")  # resolved later: the handle moved to bob
    assert uris(api.xrpc(ACTOR, actor="shared.test")) == [bobs]
    api.catalog.handle(BOB, "bob.test")
    assert uris(api.xrpc(ACTOR, actor="shared.test")) == [alices]


def test_a_large_account_pages_in_order_across_changes(api: Api) -> None:
    made = [api.catalog.publish(ALICE, f"song {i}", created_at=at(i)) for i in range(300)]
    first = api.xrpc(ACTOR, actor=ALICE, limit=100).json()
    assert [t["uri"] for t in first["tracks"]] == made[:-101:-1]
    api.catalog.delete(made[150])
    newest = api.catalog.publish(ALICE, "newest", created_at=at(400))
    rest, cursor = [], first["cursor"]
    while cursor:
        page = api.xrpc(ACTOR, actor=ALICE, limit=100, cursor=cursor).json()
        rest += [t["uri"] for t in page["tracks"]]
        cursor = page.get("cursor")
    assert rest == [uri for uri in made[199::-1] if uri != made[150]]
    assert uris(api.xrpc(ACTOR, actor=ALICE, limit=1)) == [newest]


def test_nothing_invisible_shows_while_the_indexer_writes(api: Api) -> None:
    """A writer thread keeps publishing, half of it never visible; readers page every list meanwhile."""
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            api.catalog.publish(ALICE if i % 2 else BOB, f"fine {i}", created_at=at(i % 3000))
            api.catalog.publish(BOB, f"never {i}", audio=None, created_at=at(i % 3000))
            api.catalog.publish(ALICE, f"never {i}", audio="unavailable", created_at=at(i % 3000))
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(40):
            for params in ({}, {"limit": 3}):
                titles = [t["title"] for t in api.xrpc(FEED, **params).json()["tracks"]]
                assert not [t for t in titles if t.startswith("never")]
            assert api.xrpc(SEARCH, q="never").json() == {"tracks": [], "hitsTotal": 0}
            for actor in (ALICE, BOB):
                titles = [t["title"] for t in api.xrpc(ACTOR, actor=actor, limit=100).json()["tracks"]]
                assert not [t for t in titles if t.startswith("never")]
    finally:
        stop.set()
        thread.join()


def test_a_delete_is_gone_at_once_while_the_indexer_writes(api: Api) -> None:
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            api.catalog.publish(BOB, f"noise {i}")
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for i in range(15):
            uri = api.catalog.publish(ALICE, f"brief {i}")
            assert api.xrpc(TRACK, uri=uri).status_code == 200
            api.catalog.delete(uri)
            assert everywhere(api, uri, ALICE, f"brief {i}") == GONE
    finally:
        stop.set()
        thread.join()


def test_a_restart_loads_the_same_catalog_and_keeps_catching_up(tmp_path: Path) -> None:
    db = tmp_path / "api.duckdb"
    servers = start_api(db)
    api = next(servers)
    kept = [api.catalog.publish(ALICE, f"kept {i}", created_at=at(i)) for i in range(3)]
    api.catalog.publish(ALICE, "pending", audio=None)
    api.catalog.delete(api.catalog.publish(ALICE, "deleted"))
    api.catalog.publish(BOB, "taken down")
    api.catalog.account(BOB, active=False, status="takendown")
    api.catalog.handle(ALICE, "alice.test")
    before = {nsid: api.xrpc(nsid, **params).json() for nsid, params in _READS}
    servers.close()
    servers = start_api(db)
    again = next(servers)
    assert {nsid: again.xrpc(nsid, **params).json() for nsid, params in _READS} == before
    assert uris(again.xrpc(FEED)) == kept[::-1]
    again.catalog.delete(kept[0])
    assert uris(again.xrpc(FEED)) == kept[:0:-1]
    servers.close()


_READS = (
    (FEED, {}),
    (ACTOR, {"actor": "alice.test"}),
    (SEARCH, {"q": "kept"}),
    (SEARCH, {"q": "taken"}),
)


def test_reads_stop_when_the_database_goes_away_without_a_pending_change(api: Api) -> None:
    closing = api
    closing.catalog.publish(ALICE)
    assert closing.xrpc(FEED).status_code == 200  # the catalog has caught up: nothing is pending
    closing.store.close()
    deadline = time.monotonic() + 10
    while (response := closing.xrpc(FEED)).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)  # the follower probes the database a few times a second
    assert response.status_code == 503
    assert response.json() == {"error": "DatabaseUnavailable", "message": "the index is unavailable"}
