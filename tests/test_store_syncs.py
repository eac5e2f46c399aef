"""Repository syncs through the real store, on each backend: the per-account state machine, discovery pages,
and the merge by rev of a synced repository with what the stream applied (no gap, no stale overwrite)."""

from typing import Any

import pytest

from indexer.atproto.proof import RepoRecord, VerifiedRepo
from indexer.db.batch import FAILED, SYNCED, DiscoveryPage, WindowGap
from indexer.db.rows import SyncClaim
from indexer.db.store import Store
from indexer.ingest.backfill import batch_of, decide
from indexer.net.repos import Fetched, Refused, Unreachable
from tests.builders import Applier
from tests.servers.events import account, commit, now_us, track_record
from tests.stores import Opener, query

DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
OTHER = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
URL = "https://audio.example.r2.dev/a.mp3"
A, B, C = "3mmoojp7etg2a", "3mmoojp7etg2b", "3mmoojp7etg2c"
REV0, REV1, REV2, REV3 = "3mmoojp7vgo22", "3mmoojp7vgo23", "3mmoojp7vgo24", "3mmoojp7vgo25"


@pytest.fixture
def store(open_backend: Opener) -> Store:
    return open_backend()


def record(title: str) -> dict[str, Any]:
    return track_record(title, "Artist", URL)


def sync(store: Store, did: str, rev: str, records: dict[str, dict[str, Any]], *, attempts: int = 0) -> list[str]:
    repo = VerifiedRepo(did, rev, tuple(RepoRecord(rkey, f"bafy{rkey}", rec) for rkey, rec in records.items()))
    decided = decide(
        SyncClaim(did, attempts), Fetched(repo, 1), started_us=now_us(), known=did in store.known_accounts(),
        max_future_us=300_000_000, retry_seconds=60,
    )
    return store.apply_syncs(batch_of([decided]))


def rows(store: Store, did: str = DID) -> list[tuple[Any, ...]]:
    return query(store, "SELECT rkey, rev, deleted, title, proof FROM tracks WHERE did = ? ORDER BY rkey", did)


def state(store: Store, did: str = DID) -> tuple[Any, ...]:
    [row] = query(store, "SELECT state, reason, attempts, rev, records FROM account_syncs WHERE did = ?", did)
    return row


def test_an_account_new_on_the_stream_is_asked_for_once(store: Store) -> None:
    Applier(store).apply(commit(DID, A, REV1, "create", record("One")))
    assert state(store) == ("pending", "first seen on the stream", 0, None, 0)
    assert [c.did for c in store.claim_syncs(now_us(), 10)] == [DID]
    assert state(store)[0] == "syncing"
    assert store.claim_syncs(now_us(), 10) == []
    assert store.reset_syncs() == 1  # a process that died mid-sync: pending again
    assert state(store)[0] == "pending"


def test_a_synced_repository_adds_its_tracks_proven_and_the_account(store: Store) -> None:
    store.record_discovery(DiscoveryPage("http://relay", now_us(), [DID], None))
    assert [c.did for c in store.claim_syncs(now_us(), 10)] == [DID]
    pending = sync(store, DID, REV1, {A: record("One"), B: record("Two")})
    assert pending == [URL]
    assert rows(store) == [(A, REV1, False, "One", "proven"), (B, REV1, False, "Two", "proven")]
    assert state(store) == (SYNCED, None, 0, REV1, 2)
    assert DID in store.known_accounts()
    [run] = store.discovery_runs()
    assert (run.relay, run.cursor, run.repos, run.finished_us is not None) == ("http://relay", None, 1, True)


def test_stream_and_repository_merge_by_rev_whatever_order_they_commit_in(store: Store) -> None:
    applier = Applier(store)
    applier.apply(commit(DID, A, REV0, "create", record("Old A")), commit(DID, C, REV0, "create", record("Gone C")))
    # During the sync (repository at REV1): the stream deletes B... no, it updates A and creates B at REV2.
    applier.apply(commit(DID, A, REV2, "update", record("New A")), commit(DID, B, REV2, "create", record("New B")))
    sync(store, DID, REV1, {A: record("Repo A")})  # the repository, fetched before those events
    # A: the newer stream update stays; B: newer than the repository, not gone; C: older and gone: a delete.
    assert rows(store) == [
        (A, REV2, False, "New A", "unverified"),
        (B, REV2, False, "New B", "unverified"),
        (C, REV1, True, None, "proven"),
    ]
    applier.apply(commit(DID, A, REV3, "delete"))
    sync(store, DID, REV2, {A: record("Repo A"), B: record("New B")})  # an older repository: nothing moves back
    assert rows(store)[0] == (A, REV3, True, None, "unverified")


def test_a_failed_sync_waits_and_a_refused_repository_makes_the_account_inactive(store: Store) -> None:
    Applier(store).apply(commit(DID, A, REV1, "create", record("One")))
    [claim] = store.claim_syncs(now_us(), 10)
    now = now_us()
    failed = decide(claim, Unreachable("the PDS answered 500"), started_us=now, known=True, max_future_us=1, retry_seconds=60, now=now)
    store.apply_syncs(batch_of([failed]))
    assert state(store)[:3] == (FAILED, "the PDS answered 500", 1)
    assert store.claim_syncs(now_us(), 10) == []  # not before its wait
    [claim] = store.claim_syncs(now + 61_000_000, 10)
    assert claim.attempts == 1
    refused = decide(claim, Refused("takendown", "the PDS answered RepoTakendown"), started_us=now_us(), known=True, max_future_us=1, retry_seconds=60)
    store.apply_syncs(batch_of([refused]))
    assert state(store)[0] == "inactive"
    assert query(store, "SELECT active, status FROM accounts WHERE did = ?", DID) == [(False, "takendown")]
    assert query(store, "SELECT hidden FROM tracks WHERE did = ?", DID) == [(True,)]
    Applier(store).apply(account(DID, True, time_us=now_us() + 1_000_000))  # active again: asked again
    assert state(store)[0] == "pending"


def test_a_window_gap_asks_every_account_and_relay_again(store: Store) -> None:
    applier = Applier(store)
    applier.apply(commit(DID, A, REV1, "create", record("One")))
    store.record_discovery(DiscoveryPage("http://relay", now_us(), [OTHER], None))
    for claim in store.claim_syncs(now_us(), 10):
        sync(store, claim.did, REV1, {A: record("One")} if claim.did == DID else {})
    assert store.sync_progress().states == {SYNCED: 2}
    batch = applier.planner.plan([])
    batch.cursor = now_us()
    batch.gap = WindowGap(now_us() - 3 * 86_400_000_000, now_us(), "ws://jetstream", now_us())
    store.apply(batch, "ws://jetstream")
    assert store.sync_progress().states == {"pending": 2}
    [run] = store.discovery_runs()
    assert (run.finished_us, run.repos) == (None, 0)
    report = store.status(5)
    assert report["window_gap"]["source"] == "ws://jetstream"
    assert report["backfill"]["syncs"] == {"pending": 2}


def test_operators_ask_for_accounts_again(store: Store) -> None:
    assert store.request_syncs([DID, DID, OTHER], "asked by an operator") == 2
    assert sorted(c.did for c in store.claim_syncs(now_us(), 1)) == [DID]
    assert store.request_syncs([DID], "again") == 1  # in hand: its sync is under way
    assert state(store)[0] == "syncing"


def test_a_relay_page_keeps_only_dids_and_its_cursor() -> None:
    from indexer.ingest.backfill import page_of

    body = {"repos": [{"did": DID}, {"did": "not a did"}, {"handle": "x"}, "junk", {"did": OTHER}], "cursor": "c1"}
    page = page_of("http://relay", 7, body)
    assert (page.dids, page.cursor, page.started_us) == ([DID, OTHER], "c1", 7)
    assert page_of("http://relay", 7, {"repos": [], "cursor": ""}).cursor is None
    with pytest.raises(ValueError, match="not a listReposByCollection answer"):
        page_of("http://relay", 7, {"error": "x"})
