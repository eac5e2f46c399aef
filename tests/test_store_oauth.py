"""The store's web sign-in rows: sealed blobs under hashed keys, sign-ins in flight that complete once (on
each backend)."""

import pytest

from indexer.db.store import Store
from indexer.ingest.index import Index
from tests.stores import Opener, execute, query

DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
NOW = 1_800_000_000_000_000


@pytest.fixture
def store(open_backend: Opener) -> Store:
    return open_backend()


def test_a_session_is_saved_replaced_read_and_deleted(store: Store) -> None:
    assert store.oauth_session("k1") is None
    store.save_oauth_session("k1", DID, b"\x01sealed")
    store.save_oauth_session("k1", DID, b"\x01refreshed")
    assert store.oauth_session("k1") == b"\x01refreshed"
    assert query(store, "SELECT count(*) FROM oauth_sessions") == [(1,)]
    store.delete_oauth_session("k1")
    assert store.oauth_session("k1") is None


def test_a_sign_in_in_flight_completes_once_and_not_after_it_expires(store: Store) -> None:
    store.save_oauth_request("state-a", b"a", NOW + 10)
    store.save_oauth_request("state-b", b"b", NOW - 1)
    assert store.take_oauth_request("state-a", NOW) == b"a"
    assert store.take_oauth_request("state-a", NOW) is None  # used
    assert store.take_oauth_request("state-b", NOW) is None  # expired
    assert store.take_oauth_request("unknown", NOW) is None
    assert query(store, "SELECT count(*) FROM oauth_requests") == [(0,)]


def test_purge_drops_expired_sign_ins_and_idle_sessions(store: Store) -> None:
    store.save_oauth_request("old", b"o", NOW - 1)
    store.save_oauth_request("live", b"l", NOW + 10)
    store.save_oauth_session("idle", DID, b"i")
    store.save_oauth_session("used", DID, b"u")
    execute(store, "UPDATE oauth_sessions SET updated_us = 5 WHERE id = 'idle'")
    store.purge_oauth(NOW, idle_before_us=10)
    assert query(store, "SELECT id FROM oauth_requests") == [("live",)]
    assert query(store, "SELECT id FROM oauth_sessions") == [("used",)]


def test_sessions_survive_reopening(open_backend: Opener) -> None:
    first = open_backend()
    first.save_oauth_session("k", DID, b"kept")
    first.close()
    assert open_backend().oauth_session("k") == b"kept"


async def test_the_index_writes_sessions_through_its_one_writer(store: Store) -> None:
    index = Index(store, max_future_us=0)
    try:
        await index.save_oauth_session("k", DID, b"s")
        await index.save_oauth_request("r", b"q", NOW * 2)
        assert index.oauth_session("k") == b"s"
        assert await index.take_oauth_request("r") == b"q"
        await index.delete_oauth_session("k")
        assert index.oauth_session("k") is None
    finally:
        index.close()


def test_kept_values_are_made_once_and_replaced_when_unusable(store: Store) -> None:
    index = Index(store, max_future_us=0)
    try:
        made = iter(["first", "second"])
        assert index.kept("key", lambda: next(made)) == "first"
        assert index.kept("key", lambda: next(made)) == "first"
        assert index.kept("key", lambda: next(made), usable=lambda value: value != "first") == "second"
        assert store.meta("key") == "second"
    finally:
        index.close()


def test_of_two_values_made_at_once_the_first_stored_is_kept(store: Store) -> None:
    """Replicas that start together on one database each make a secret: all must keep the same one."""
    assert store.keep_meta("key", "made by one", replace=None) == "made by one"
    assert store.keep_meta("key", "made by another", replace=None) == "made by one"
    assert store.keep_meta("key", "a usable one", replace="made by one") == "a usable one"  # replacing a bad one
    assert store.keep_meta("key", "another usable one", replace="made by one") == "a usable one"
    assert store.meta("key") == "a usable one"
