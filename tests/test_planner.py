"""Planner.plan: wire events in, the Batch the store writes out. Golden cases live in data/planner_cases.jsonl,
one per line: the accounts already indexed, the events exactly as Jetstream sends them, and the batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from indexer.db.batch import Batch
from indexer.ingest.planner import Planner
from tests.builders import wire
from tests.servers.events import golden_events

CASES = [orjson.loads(line) for line in (Path(__file__).parent / "data" / "planner_cases.jsonl").read_bytes().splitlines() if line]
A = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
GOLDEN_ACCOUNT = "did:plc:g4ut2w5755qxi3fe7mfs72p4"  # the one identity and account event in golden_v1


def summary(batch: Batch) -> dict[str, Any]:
    """The batch in the cases' shape."""
    tracks = batch.tracks.select(["did", "rkey", "rev", "deleted"]).to_pylist() if batch.tracks is not None else []
    return {
        "tracks": [list(row.values()) for row in tracks],
        "accounts": [[a.did, a.seq, a.active, a.status] for a in batch.accounts],
        "rejections": [[r.uri, r.rev, r.reason] for r in batch.rejections],
        "new_accounts": batch.new_accounts,
        "identities": sorted(batch.identities),
        "cursor": batch.cursor,
        "counts": batch.counts,
    }


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_golden_case(case: dict[str, Any]) -> None:
    batch = Planner(set(case["known"])).plan(wire(*case["events"]))
    assert summary(batch) == case["expect"]


def test_rejections_keep_the_event_time() -> None:
    case = next(c for c in CASES if c["name"] == "record_missing_a_required_field_is_rejected")
    batch = Planner(set(case["known"])).plan(wire(*case["events"]))
    assert [r.time_us for r in batch.rejections] == [case["events"][0]["time_us"]]


def test_track_rows_carry_the_record_and_tombstones_carry_nothing() -> None:
    case = next(c for c in CASES if c["name"] == "delete_after_create_in_one_batch_leaves_the_tombstone")
    tracks = Planner(set(case["known"])).plan(wire(*case["events"])).tracks
    assert tracks is not None
    tombstone, live = tracks.to_pylist()
    assert live == {
        "did": A, "rkey": "3mmoojp7etg2h", "rev": "3mmoojp7vgo2b", "cid": case["events"][1]["commit"]["cid"],
        "deleted": False, "title": "Song", "artist": "Artist", "album": None,
        "audio_url": "https://audio.example.r2.dev/a.mp3", "file_type": "mp3", "duration": None,
        "created_at": "2026-05-25T14:00:00.000Z", "created_us": 1779717600000000, "event_time_us": 1779719009132432,
    }
    assert tombstone == {
        "did": A, "rkey": "3mmoojp7etg2g", "rev": "3mmoojp7vgo2c", "cid": None, "deleted": True, "title": None,
        "artist": None, "album": None, "audio_url": None, "file_type": None, "duration": None, "created_at": None,
        "created_us": None, "event_time_us": 1779719009132433,
    }


def test_known_accounts_grow_with_creates_across_batches() -> None:
    case = next(c for c in CASES if c["name"] == "create_by_a_new_account_makes_it_new_and_resolves_it")
    planner = Planner()
    first = planner.plan(wire(*case["events"]))
    again = planner.plan(wire(*case["events"]))
    assert (first.new_accounts, again.new_accounts, again.identities, planner.known) == ([A], [], set(), {A})


def test_golden_v1_capture_of_strangers_changes_nothing_but_the_cursor() -> None:
    batch = Planner().plan(wire(*golden_events()))
    assert summary(batch) == {
        "tracks": [], "accounts": [], "rejections": [], "new_accounts": [], "identities": [],
        "cursor": 1779719010689411, "counts": {"ignored": 8},
    }


def test_golden_v1_capture_with_its_account_known() -> None:
    batch = Planner({GOLDEN_ACCOUNT}).plan(wire(*golden_events()))
    assert summary(batch) == {
        "tracks": [], "accounts": [[GOLDEN_ACCOUNT, 30340180351, True, None]], "rejections": [], "new_accounts": [],
        "identities": [GOLDEN_ACCOUNT], "cursor": 1779719010689411,
        "counts": {"ignored": 8, "identity": 1, "account": 1},
    }
