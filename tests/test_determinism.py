"""The index is a function of the event stream alone: however the stream is cut into batches, and however
often a crash makes a restart replay a stretch of it, it ends as one clean run of it ends.

Streams are drawn by hypothesis from a few accounts and record keys, with creates, updates, deletes and
account events of every status (deletions included, and account events that precede an account's first
commit), in stream order with rising times. Each run goes through the real planner and a real DuckDB store.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexer.atproto import tid
from indexer.db.duckdb_store import DuckDBStore
from indexer.ingest.planner import Planner
from tests.builders import wire
from tests.servers.events import account, commit, track_record

DIDS = [f"did:plc:{c * 24}" for c in "abc"]
RKEYS = [tid.encode(1_700_000_000_000_000 + i, 1) for i in range(3)]
START_US = 1_779_000_000_000_000
STATUSES = [(True, None), (False, "deactivated"), (False, "takendown"), (False, "suspended"), (False, "deleted")]

step = st.one_of(
    st.tuples(st.just("commit"), st.sampled_from(DIDS), st.sampled_from(RKEYS), st.sampled_from(["create", "update", "delete"])),
    st.tuples(st.just("account"), st.sampled_from(DIDS), st.sampled_from(STATUSES), st.integers(0, 3)),
)


def stream(steps: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Wire events with rising times; revs rise per record, and an account's seq goes back to small
    numbers now and then, as after a relay restart (the time still orders its events)."""
    events: list[dict[str, Any]] = []
    revs = 0
    for i, item in enumerate(steps):
        t = START_US + i * 1_000
        if item[0] == "commit":
            _, did, rkey, operation = item
            revs += 1
            rev = tid.encode(1_710_000_000_000_000 + revs, 2)
            record = track_record(f"Song {revs}", "Artist", f"https://audio.example/{revs}.mp3", created_at="2026-01-01T00:00:00Z")
            events.append(commit(did, rkey, rev, operation, None if operation == "delete" else record, time_us=t))
        else:
            _, did, (active, status), seq = item
            events.append(account(did, active, status, seq=seq, time_us=t))
    return events


def run(batches: list[list[dict[str, Any]]], store: DuckDBStore | None = None) -> DuckDBStore:
    store = store or DuckDBStore(":memory:")
    planner = Planner(store.known_accounts())
    for batch in batches:
        store.apply(planner.plan(wire(*batch)), "test")
    return store


def state(store: DuckDBStore) -> tuple[list[tuple[Any, ...]], ...]:
    con = store.reader()
    tracks = con.execute(
        "SELECT did, rkey, rev, cid, deleted, hidden, title, audio_url, sort_us, first_seen_us FROM tracks ORDER BY ALL"
    ).fetchall()
    accounts = con.execute("SELECT did, active, status, status_at_us, seq, since_us FROM accounts ORDER BY did").fetchall()
    rejections = con.execute("SELECT uri, rev, reason FROM rejections ORDER BY ALL").fetchall()
    return tracks, accounts, rejections


def split(events: list[dict[str, Any]], cuts: list[int]) -> list[list[dict[str, Any]]]:
    points = sorted({0, len(events), *(c % (len(events) + 1) for c in cuts)})
    return [events[a:b] for a, b in itertools.pairwise(points) if b > a]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=30), cuts=st.lists(st.integers(0, 40), max_size=8))
def test_any_batch_boundaries_give_the_clean_runs_index(steps: list[tuple[Any, ...]], cuts: list[int]) -> None:
    events = stream(steps)
    assert state(run(split(events, cuts))) == state(run([events]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(step, min_size=1, max_size=30),
    crashes=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=4),
)
def test_crashes_and_rewinds_give_the_clean_runs_index(steps: list[tuple[Any, ...]], crashes: list[tuple[int, int]]) -> None:
    """A crash loses what was not committed; the restart's planner knows only what the store holds, and
    replays from some point at or before the last commit (a rewind), one event a batch or all at once."""
    events = stream(steps)
    store = DuckDBStore(":memory:")
    committed = 0
    for upto, back in crashes:
        upto = max(committed, upto % (len(events) + 1))
        start = max(0, committed - back)
        run([[event] for event in events[start:upto]] if back % 2 else [events[start:upto]], store)
        committed = upto
    run([events[max(0, committed - 3) :]], store)  # the last restart runs to the end
    assert state(store) == state(run([events]))


def test_a_deletion_then_a_create_then_a_reactivation_show_the_track_in_any_batching() -> None:
    """The adversarial run's minimal case: visible in one run and a permanent tombstone in another."""
    did, rkey = DIDS[0], RKEYS[0]
    record = track_record("Back", "Artist", "https://audio.example/back.mp3", created_at="2026-01-01T00:00:00Z")
    events = [
        commit(did, RKEYS[1], tid.encode(1_710_000_000_000_001, 2), "create", record, time_us=START_US),
        account(did, False, "deleted", seq=1, time_us=START_US + 1_000),
        commit(did, rkey, tid.encode(1_710_000_000_000_002, 2), "create", record, time_us=START_US + 281_000),
        account(did, True, seq=2, time_us=START_US + 400_000),
    ]
    for batches in ([events], [events[:2], events[2:]], [events[:3], events[3:]], [[e] for e in events]):
        tracks, accounts, _ = state(run(batches))
        shown = [(row[1], row[4], row[5]) for row in tracks]  # rkey, deleted, hidden
        assert shown == [(rkey, False, False), (RKEYS[1], True, False)]  # the earlier track purged, the new one shown
        assert [(a[1], a[2]) for a in accounts] == [(True, None)]


def test_a_replay_that_knows_an_account_ignores_its_events_from_before_it_was_known() -> None:
    did = DIDS[1]
    record = track_record("Song", "Artist", "https://audio.example/a.mp3", created_at="2026-01-01T00:00:00Z")
    events = [
        account(did, False, "takendown", seq=1, time_us=START_US),  # before its first commit: nobody followed it
        commit(did, RKEYS[0], tid.encode(1_710_000_000_000_001, 2), "create", record, time_us=START_US + 1_000),
    ]
    clean = state(run([events]))
    store = run([events])
    run([events], store)  # a restart rewinds over both, now knowing the account
    assert state(store) == clean
    assert [(a[1], a[2]) for a in clean[1]] == [(True, None)]
