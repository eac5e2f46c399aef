"""Index: local publishes through the one planner and writer, the cursor secret, and a failed commit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from indexer.db.batch import Rejection
from indexer.db.store import Store
from indexer.errors import StoreError
from indexer.ingest.index import STORED_HERE, Index, local_commit, stored_audio
from tests.builders import wire
from tests.servers.events import commit, track_record
from tests.stores import Opener, query

DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
OTHER = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
RKEY = "3mmoojp7etg2g"
REV = "3mmoojp7vgo2a"
URL = "https://audio.example.r2.dev/a.mp3"
CID = "bafyreidk5brxcf6wqa2efgtjpr4ujvorz3bmkku3fjulnnqc3xuwr74lya"
DAY_US = 86_400_000_000


@pytest.fixture
def store(open_backend: Opener) -> Store:
    return open_backend()


@pytest.fixture
def index(store: Store) -> Iterator[Index]:
    index = Index(store, max_future_us=DAY_US)
    yield index
    index.close()


def tracks(store: Store) -> list[tuple]:
    return query(store, "SELECT did, rkey, rev, audio_state, deleted FROM tracks ORDER BY did, rkey")


def accounts(store: Store) -> list[tuple]:
    return query(store, "SELECT did, handle FROM accounts ORDER BY did")


async def test_local_create_with_stored_audio_is_verified_at_once(index: Index, store: Store) -> None:
    told: list[dict[str, int]] = []
    index.on_new_accounts = told.append
    record = track_record("Song", "Artist", URL)
    commit_event = local_commit(DID, RKEY, REV, CID, record)
    await index.ingest_local(commit_event, stored_audio(URL, "audio/mpeg"), "alice.example.com")
    assert tracks(store) == [(DID, RKEY, REV, "verified", False)]
    assert query(store, "SELECT url, state, reason, status, content_type FROM audio_checks") == [
        (URL, "verified", STORED_HERE, None, "audio/mpeg")
    ]
    assert store.cursor() is None  # not a Jetstream event
    assert accounts(store) == [(DID, "alice.example.com")]
    assert (told, index.planner.known) == ([{DID: commit_event.time_us}], {DID: commit_event.time_us})


async def test_local_create_without_audio_waits_for_a_check(index: Index, store: Store) -> None:
    await index.ingest_local(local_commit(DID, RKEY, REV, CID, track_record("Song", "Artist", URL)), None, None)
    assert tracks(store) == [(DID, RKEY, REV, "pending", False)]
    assert accounts(store) == [(DID, None)]
    assert store.pending_urls() == [URL]


async def test_a_known_account_is_not_new_again(index: Index, store: Store) -> None:
    await index.ingest_local(local_commit(DID, RKEY, REV, CID, track_record("Song", "Artist", URL)), None, "alice.example.com")
    told: list[list[str]] = []
    index.on_new_accounts = told.append
    record = track_record("Other", "Artist", URL)
    await index.ingest_local(local_commit(DID, "3mmoojp7etg2h", "3mmoojp7vgo2b", CID, record), None, "renamed.example.com")
    assert told == []
    assert accounts(store) == [(DID, "alice.example.com")]


async def test_local_delete_leaves_a_tombstone(index: Index, store: Store) -> None:
    await index.ingest_local(local_commit(DID, RKEY, REV, CID, track_record("Song", "Artist", URL)), None, None)
    await index.ingest_local(local_commit(DID, RKEY, "3mmoojp7vgo2b", None, None), None, None)
    assert tracks(store) == [(DID, RKEY, "3mmoojp7vgo2b", "none", True)]


async def test_the_jetstream_copy_of_a_local_write_changes_only_the_cursor(index: Index, store: Store) -> None:
    record = track_record("Song", "Artist", URL)
    await index.ingest_local(local_commit(DID, RKEY, REV, CID, record), stored_audio(URL, "audio/mpeg"), None)
    before = query(store, "SELECT * FROM tracks")
    copy = commit(DID, RKEY, REV, "create", record, CID, time_us=1_779_719_009_132_431)
    assert await index.commit(index.planner.plan(wire(copy)), "jetstream") == []
    assert query(store, "SELECT * FROM tracks") == before
    assert store.cursor().time_us == 1_779_719_009_132_431


def test_a_configured_cursor_secret_wins_and_is_not_stored(index: Index, store: Store) -> None:
    assert index.cursor_secret("configured elsewhere") == b"configured elsewhere"
    assert store.meta("api_cursor_secret") is None


def test_a_generated_cursor_secret_is_made_once_and_survives_a_reopen(open_backend: Opener) -> None:
    store = open_backend()
    index = Index(store, max_future_us=DAY_US)
    secret = index.cursor_secret("")
    assert (len(secret), index.cursor_secret("")) == (64, secret)
    assert set(secret.decode()) <= set("0123456789abcdef")
    index.close()
    store.close()
    store = open_backend()
    again = Index(store, max_future_us=DAY_US)
    assert again.cursor_secret("") == secret
    assert again.cursor_secret("configured") == b"configured"
    again.close()
    store.close()


async def test_a_failed_commit_resets_the_known_accounts_to_the_store(index: Index, store: Store) -> None:
    await index.ingest_local(local_commit(DID, RKEY, REV, CID, track_record("Song", "Artist", URL)), None, None)
    event = commit(OTHER, RKEY, REV, "create", track_record("Song", "Artist", URL))
    batch = index.planner.plan(wire(event))
    assert (list(batch.new_accounts), set(index.planner.known)) == ([OTHER], {DID, OTHER})
    batch.rejections.append(Rejection("at://x", "r", "reason", 2**70))  # out of BIGINT range: the store refuses
    with pytest.raises(StoreError):
        await index.commit(batch, "jetstream")
    assert set(index.planner.known) == set(store.known_accounts()) == {DID}
    assert index.planner.max_future_us == DAY_US
    assert tracks(store) == [(DID, RKEY, REV, "pending", False)]
