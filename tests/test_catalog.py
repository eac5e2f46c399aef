"""The API's in-memory catalog, fed the rows the store hands out."""

from __future__ import annotations

import orjson

from appview_api.read.catalog import Catalog
from indexer.db.rows import AccountRow, TrackRow

A = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
B = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
T = 1_779_719_009_000_000  # 2026-05-25T14:23:29Z


def row(did: str, rkey: str, sort_us: int, changed_us: int, *, visible: bool = True, title: str = "Song") -> TrackRow:
    return TrackRow(
        did, rkey, visible, "bafycid", title, "Artist", None, "https://a.example/x.mp3", "mp3", 200,
        "2026-05-25T14:00:00.000Z", T, sort_us, changed_us,
    )


def titles(catalog: Catalog, docs: list[int]) -> list[str]:
    return [orjson.loads(catalog.view(doc)[3])[1] for doc in docs]


def keys(catalog: Catalog, docs: list[int]) -> list[tuple[int, str, str]]:
    return [catalog.key(doc) for doc in docs]


def test_a_visible_row_becomes_a_document() -> None:
    catalog = Catalog()
    catalog.apply_tracks([row(A, "3k1", 100, 7)])
    [doc] = catalog.feed(None, 10)
    did, handle, rkey, payload = catalog.view(doc)
    assert (did, handle, rkey) == (A, None, "3k1")
    assert orjson.loads(payload) == [
        "bafycid", "Song", "Artist", None, "https://a.example/x.mp3", "mp3", 200, "2026-05-25T14:00:00.000Z",
        "2026-05-25T14:23:29.000Z",
    ]
    assert (len(catalog), catalog.tracks_seen, catalog.version) == (1, 7, 1)


def test_an_invisible_row_of_an_unknown_track_adds_nothing() -> None:
    catalog = Catalog()
    catalog.apply_tracks([row(A, "3k1", 100, 7, visible=False)])
    assert (len(catalog), catalog.feed(None, 10), catalog.tracks_seen) == (0, [], 7)


def test_a_changed_row_replaces_its_document() -> None:
    catalog = Catalog()
    catalog.apply_tracks([row(A, "3k1", 100, 1, title="Old Name")])
    catalog.apply_tracks([row(A, "3k1", 100, 2, title="New Name")])
    assert len(catalog) == 1
    assert titles(catalog, catalog.feed(None, 10)) == ["New Name"]
    assert catalog.search(("old",), None, 10) == ([], 0)  # the retired document's words match nothing live
    [(hit, doc)] = catalog.search(("new",), None, 10)[0]
    assert (hit.did, hit.rkey, titles(catalog, [doc])) == (A, "3k1", ["New Name"])


def test_the_same_row_twice_keeps_its_document() -> None:
    catalog = Catalog()
    catalog.apply_tracks([row(A, "3k1", 100, 1)])
    first = catalog.feed(None, 10)
    catalog.apply_tracks([row(A, "3k1", 100, 1, title="Ignored")])
    assert (catalog.feed(None, 10), titles(catalog, first)) == (first, ["Song"])


def test_an_invisible_row_retires_the_document() -> None:
    catalog = Catalog()
    catalog.apply_tracks([row(A, "3k1", 100, 1), row(A, "3k2", 101, 1)])
    catalog.apply_tracks([row(A, "3k1", 100, 2, visible=False)])
    account = catalog.account(A)
    assert account is not None
    assert (len(catalog), list(account.tracks)) == (1, ["3k2"])
    assert keys(catalog, catalog.feed(None, 10)) == [(101, A, "3k2")]
    assert catalog.search(("song",), None, 10)[1] == 1


def test_feed_is_newest_first_with_ties_by_did_then_rkey() -> None:
    catalog = Catalog()
    catalog.apply_tracks([row(A, "3k1", 100, 1), row(B, "3k1", 200, 1), row(A, "3k2", 200, 1), row(B, "3k0", 200, 1)])
    assert keys(catalog, catalog.feed(None, 10)) == [(200, B, "3k1"), (200, B, "3k0"), (200, A, "3k2"), (100, A, "3k1")]


def test_feed_pages_by_key_through_ties() -> None:
    catalog = Catalog()
    catalog.apply_tracks([row(A, "3k1", 100, 1), row(B, "3k1", 200, 1), row(A, "3k2", 200, 1), row(B, "3k0", 200, 1)])
    first = catalog.feed(None, 2)
    second = catalog.feed(catalog.key(first[-1]), 2)
    third = catalog.feed(catalog.key(second[-1]), 2)
    assert keys(catalog, first) == [(200, B, "3k1"), (200, B, "3k0")]
    assert keys(catalog, second) == [(200, A, "3k2"), (100, A, "3k1")]
    assert third == []


def test_actor_feed_pages_one_account_newest_first() -> None:
    catalog = Catalog()
    catalog.apply_tracks([row(A, "3k1", 100, 1), row(A, "3k2", 300, 1), row(A, "3k3", 200, 1), row(B, "3k9", 250, 1)])
    account = catalog.account(A)
    assert account is not None
    first = catalog.actor_feed(account, None, 2)
    rest = catalog.actor_feed(account, catalog.key(first[-1]), 2)
    assert keys(catalog, first) == [(300, A, "3k2"), (200, A, "3k3")]
    assert keys(catalog, rest) == [(100, A, "3k1")]
    assert catalog.actor_feed(account, catalog.key(rest[-1]), 2) == []


def test_account_by_did_or_by_handle_in_any_case() -> None:
    catalog = Catalog()
    catalog.apply_accounts([AccountRow(A, "Alice.Example.com", 5, 5)])
    names = [A, "did:plc:" + "A" * 24, "alice.example.com", "ALICE.EXAMPLE.COM"]
    found = [catalog.account(name) for name in names]
    assert [account.did if account else None for account in found] == [A, A, A, A]
    assert catalog.account(B) is None
    assert catalog.account("bob.example.com") is None
    assert catalog.accounts_seen == 5


def test_a_new_handle_releases_the_old_one() -> None:
    catalog = Catalog()
    catalog.apply_accounts([AccountRow(A, "alice.example.com", 5, 5)])
    catalog.apply_accounts([AccountRow(A, "alice.example.org", 6, 6)])
    assert catalog.account("alice.example.com") is None
    assert getattr(catalog.account("alice.example.org"), "handle", None) == "alice.example.org"


def test_of_two_accounts_claiming_one_handle_the_last_resolved_wins() -> None:
    catalog = Catalog()
    catalog.apply_accounts([AccountRow(B, "shared.example.com", 9, 9), AccountRow(A, "shared.example.com", 5, 5)])
    assert getattr(catalog.account("shared.example.com"), "did", None) == B
    catalog.apply_accounts([AccountRow(B, None, 10, 10)])  # B's handle no longer verifies
    assert getattr(catalog.account("shared.example.com"), "did", None) == A


def test_an_apply_bumps_the_version_once_and_only_when_something_changed() -> None:
    catalog = Catalog()
    catalog.apply_tracks([row(A, "3k1", 100, 1), row(A, "3k2", 100, 1)])
    catalog.apply_accounts([AccountRow(A, "alice.example.com", 5, 5)])
    catalog.apply_tracks([row(A, "3k1", 100, 1)])  # applied already: the cached pages stay good
    assert catalog.version == 2
