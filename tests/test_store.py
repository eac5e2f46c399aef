"""Planner + Store through the real write path, on each backend: a real DuckDB file and a real PostgreSQL
database (one suite, run once per backend by the `open_backend` fixture)."""

from typing import Any

import pytest

from indexer.db.batch import Rejection
from indexer.db.rows import AudioResult, AudioState
from indexer.db.store import Store
from indexer.errors import StoreError
from tests.builders import Applier, wire
from tests.servers.events import account, commit, identity, now_us, track_record
from tests.stores import Opener, query

DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
OTHER = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
RKEY = "3mmoojp7etg2g"
URL = "https://audio.example.r2.dev/a.mp3"


def verdict(
    url: str, state: str, reason: str = "ok", status: int | None = 200, content_type: str | None = "audio/mpeg"
) -> AudioResult:
    return AudioResult(url, AudioState(state), reason, status, content_type)


class Index(Applier):
    def __init__(self, store: Store) -> None:
        super().__init__(store)

    def query(self, sql: str, *params: Any) -> list[tuple]:
        return query(self.store, sql, *params)

    def rows(self) -> list[tuple]:
        return self.query(
            "SELECT did, rkey, rev, title, audio_url, audio_state, deleted, hidden FROM tracks ORDER BY did, rkey"
        )

    def track(self, did: str = DID, rkey: str = RKEY) -> tuple | None:
        found = self.query(
            "SELECT rev, title, audio_state, deleted, hidden FROM tracks WHERE did = ? AND rkey = ?", did, rkey
        )
        return found[0] if found else None


@pytest.fixture
def index(open_backend: Opener) -> Index:
    return Index(open_backend())


def create(rev: str, title: str = "Song", url: str = URL, did: str = DID, rkey: str = RKEY, **kw: Any) -> dict:
    return commit(did, rkey, rev, "create", track_record(title, "Artist", url), **kw)


def update(rev: str, title: str, url: str = URL, did: str = DID, rkey: str = RKEY) -> dict:
    return commit(did, rkey, rev, "update", track_record(title, "Artist", url))


def delete(rev: str, did: str = DID, rkey: str = RKEY) -> dict:
    return commit(did, rkey, rev, "delete")


def test_create_is_stored_pending_and_asks_for_a_check(index: Index) -> None:
    assert index.apply(create("3mmoojp7vgo2a")) == [URL]
    assert index.track() == ("3mmoojp7vgo2a", "Song", "pending", False, False)


def test_update_with_newer_rev_applies_and_older_is_ignored(index: Index) -> None:
    index.apply(create("3mmoojp7vgo2a"))
    index.apply(update("3mmoojp7vgo2c", "New title"))
    index.apply(update("3mmoojp7vgo2b", "Stale title"))
    assert index.track()[:2] == ("3mmoojp7vgo2c", "New title")


def test_out_of_order_within_one_batch_keeps_the_newest(index: Index) -> None:
    index.apply(update("3mmoojp7vgo2c", "Newest"), create("3mmoojp7vgo2a", "Oldest"), update("3mmoojp7vgo2b", "Mid"))
    assert index.track()[:2] == ("3mmoojp7vgo2c", "Newest")


def test_duplicates_change_nothing(index: Index) -> None:
    event = create("3mmoojp7vgo2a")
    index.apply(event)
    before = index.rows()
    index.apply(event, event)
    index.apply(event)
    assert index.rows() == before


def test_delete_leaves_a_tombstone_that_a_replayed_create_cannot_pass(index: Index) -> None:
    first = create("3mmoojp7vgo2a")
    index.apply(first, update("3mmoojp7vgo2b", "Edited"))
    index.apply(delete("3mmoojp7vgo2c"))
    assert index.track() == ("3mmoojp7vgo2c", None, "none", True, False)
    index.apply(first)
    index.apply(update("3mmoojp7vgo2b", "Edited"))
    assert index.track() == ("3mmoojp7vgo2c", None, "none", True, False)


def test_delete_before_create_in_replay_order_still_wins(index: Index) -> None:
    index.apply(delete("3mmoojp7vgo2c"), create("3mmoojp7vgo2a"))
    assert index.track()[3] is True


def test_recreate_with_a_newer_rev_after_delete_is_a_new_record(index: Index) -> None:
    index.apply(create("3mmoojp7vgo2a"), delete("3mmoojp7vgo2b"))
    assert index.apply(create("3mmoojp7vgo2c", "Again")) == [URL]
    assert index.track() == ("3mmoojp7vgo2c", "Again", "pending", False, False)


def test_audio_result_reaches_every_track_with_that_url_and_is_reused(index: Index) -> None:
    index.apply(create("3mmoojp7vgo2a"), create("3mmoojp7vgo2a", did=OTHER))
    index.store.record_audio([verdict(URL, "verified")])
    assert [r[5] for r in index.rows()] == ["verified", "verified"]
    # A new track with an URL checked recently is not checked again.
    assert index.apply(create("3mmoojp7vgo2b", rkey="3mmoojp7etg2h")) == []
    assert index.track(rkey="3mmoojp7etg2h")[2] == "verified"


def test_changing_the_url_resets_the_check_and_keeping_it_does_not(index: Index) -> None:
    index.apply(create("3mmoojp7vgo2a"))
    index.store.record_audio([verdict(URL, "verified")])
    index.apply(update("3mmoojp7vgo2b", "Same url"))
    assert index.track()[2] == "verified"
    new_url = "https://audio.example.r2.dev/b.mp3"
    assert index.apply(update("3mmoojp7vgo2c", "New url", url=new_url)) == [new_url]
    assert index.track()[2] == "pending"


def test_unavailable_result_is_kept(index: Index) -> None:
    index.apply(create("3mmoojp7vgo2a"))
    index.store.record_audio([verdict(URL, "unavailable", "404 Not Found", 404, None)])
    assert index.track()[2] == "unavailable"
    assert index.query("SELECT state, reason, status FROM audio_checks") == [
        ("unavailable", "404 Not Found", 404)
    ]


def test_takedown_hides_reactivation_shows_deletion_purges(index: Index) -> None:
    index.apply(create("3mmoojp7vgo2a"), create("3mmoojp7vgo2a", did=OTHER))
    index.apply(account(DID, False, "takendown", seq=10))
    assert index.track()[4] is True
    assert index.track(did=OTHER)[4] is False
    # A track created while the account is inactive is hidden too.
    index.apply(create("3mmoojp7vgo2b", rkey="3mmoojp7etg2h"))
    assert index.track(rkey="3mmoojp7etg2h")[4] is True
    index.apply(account(DID, True, seq=11))
    assert (index.track()[4], index.track(rkey="3mmoojp7etg2h")[4]) == (False, False)
    index.apply(account(DID, False, "deleted", seq=12))
    assert index.track() == ("3mmoojp7vgo2a", None, "none", True, True)
    # The purge leaves tombstones: a replayed create cannot bring the track back.
    index.apply(create("3mmoojp7vgo2a"))
    assert index.track()[3] is True
    assert index.track(did=OTHER)[3] is False


def test_older_account_event_cannot_undo_a_newer_one(index: Index) -> None:
    t = now_us()
    index.apply(create("3mmoojp7vgo2a", time_us=t))
    index.apply(account(DID, False, "suspended", seq=20, time_us=t + 2_000))
    index.apply(account(DID, True, seq=19, time_us=t + 1_000))  # replayed: its own, older, time
    assert index.track()[4] is True
    assert index.query("SELECT active, status, seq FROM accounts") == [
        (False, "suspended", 20)
    ]


def test_after_a_relay_restart_a_newer_event_wins_with_a_lower_seq(index: Index) -> None:
    """A new relay numbers its events from the start again: seq alone would freeze every account."""
    t = now_us()
    index.apply(create("3mmoojp7vgo2a", time_us=t))
    index.apply(account(DID, False, "suspended", seq=9_000_000, time_us=t + 1_000))
    index.apply(account(DID, True, seq=3, time_us=t + 2_000))
    assert index.track()[4] is False
    index.apply(account(DID, False, "takendown", seq=4, time_us=t + 3_000))
    assert index.track()[4] is True
    assert index.query("SELECT active, status, seq FROM accounts") == [
        (False, "takendown", 4)
    ]


def test_events_for_unknown_accounts_change_nothing(index: Index) -> None:
    index.apply(account(OTHER, False, "takendown"), identity(OTHER, "x.test"))
    assert index.query("SELECT count(*) FROM accounts") == [(0,)]
    assert index.planner.plan(wire(identity(OTHER))).identities == set()


def test_identity_event_for_known_account_asks_for_resolution(index: Index) -> None:
    index.apply(create("3mmoojp7vgo2a"))
    batch = index.planner.plan(wire(identity(DID, "claimed.test")))
    assert batch.identities == {DID}
    index.store.set_handles({DID: "alice.test"})
    assert index.query("SELECT handle FROM accounts") == [("alice.test",)]


def test_invalid_record_is_rejected_kept_and_not_indexed(index: Index) -> None:
    bad = commit(DID, RKEY, "3mmoojp7vgo2a", "create", {**track_record("S", "A", URL), "fileType": "aac"})
    assert index.apply(bad) == []
    index.apply(bad)  # replayed: still one rejection
    assert index.rows() == []
    rows = index.query("SELECT uri, rev, reason FROM rejections")
    assert len(rows) == 1
    assert rows[0][:2] == (f"at://{DID}/app.relay.track/{RKEY}", "3mmoojp7vgo2a")
    assert "fileType" in rows[0][2] and "is not one of enum values" in rows[0][2]


def test_other_collections_are_ignored(index: Index) -> None:
    index.apply(create("3mmoojp7vgo2a", collection="app.bsky.feed.post"))
    assert index.rows() == []


def test_cursor_is_monotonic_except_on_rewind(index: Index) -> None:
    t = now_us()
    index.apply(create("3mmoojp7vgo2a", time_us=t))
    index.apply(create("3mmoojp7vgo2a", time_us=t - 5_000_000))  # a reconnect's rewind
    assert index.store.cursor().time_us == t
    index.store.rewind(t - 3_600_000_000, "replay")
    assert (index.store.cursor().time_us, index.store.cursor().source) == (t - 3_600_000_000, "replay")


def test_failed_batch_rolls_back_everything_including_the_cursor(index: Index) -> None:
    t = now_us()
    index.apply(create("3mmoojp7vgo2a", time_us=t))
    before = (index.rows(), index.store.cursor().time_us)
    batch = index.planner.plan(wire(create("3mmoojp7vgo2b", "X", time_us=t + 10)))
    batch.rejections.append(Rejection("at://x", "r", "reason", 2**70))  # out of BIGINT range: fails after the upsert
    with pytest.raises(StoreError):
        index.store.apply(batch, "test")
    assert (index.rows(), index.store.cursor().time_us) == before


def test_state_survives_reopening(open_backend: Opener) -> None:
    first = Index(open_backend())
    event = create("3mmoojp7vgo2a")
    first.apply(event)
    first.store.close()
    again = Index(open_backend())
    assert again.planner.known == {DID: event["time_us"]}  # followed from its first commit's stream time
    assert again.store.pending_urls() == [URL]
    assert again.store.unresolved_dids() == [DID]
