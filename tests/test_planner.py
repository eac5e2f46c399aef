"""Planner.plan: wire events in, the Batch the store writes out. Golden cases live in data/planner_cases.jsonl,
one per line: the accounts already indexed, the events exactly as Jetstream sends them, and the batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from indexer.atproto.datetimes import us_from_iso
from indexer.db.batch import Batch, Segment
from indexer.ingest.planner import PROVEN, Planner
from tests.builders import wire
from tests.servers.events import commit, golden_events, record_cid, track_record

CASES = [orjson.loads(line) for line in (Path(__file__).parent / "data" / "planner_cases.jsonl").read_bytes().splitlines() if line]
A = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
GOLDEN_ACCOUNT = "did:plc:g4ut2w5755qxi3fe7mfs72p4"  # the one identity and account event in golden_v1


def summary(batch: Batch) -> dict[str, Any]:
    """The batch in the cases' shape: each segment's account changes (did, at_us, seq, active, status,
    purge_at_us, purge_seq) and track changes (did, rkey, rev, deleted), in order."""
    return {
        "segments": [
            {
                "accounts": [[a.did, a.at_us, a.seq, a.active, a.status, a.purge_at_us, a.purge_seq] for a in s.accounts],
                "tracks": [list(row.values()) for row in tracks(s)],
            }
            for s in batch.segments
        ],
        "rejections": [[r.uri, r.rev, r.reason] for r in batch.rejections],
        "new_accounts": batch.new_accounts,
        "identities": sorted(batch.identities),
        "cursor": batch.cursor,
        "counts": batch.counts,
    }


def tracks(segment: Segment) -> list[dict[str, Any]]:
    return segment.tracks.select(["did", "rkey", "rev", "deleted"]).to_pylist() if segment.tracks is not None else []


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_golden_case(case: dict[str, Any]) -> None:
    batch = Planner(case["known"]).plan(wire(*case["events"]))
    assert summary(batch) == case["expect"]


def test_rejections_keep_the_event_time() -> None:
    case = next(c for c in CASES if c["name"] == "record_missing_a_required_field_is_rejected")
    batch = Planner(case["known"]).plan(wire(*case["events"]))
    assert [r.time_us for r in batch.rejections] == [case["events"][0]["time_us"]]


def test_track_rows_carry_the_record_and_tombstones_carry_nothing() -> None:
    case = next(c for c in CASES if c["name"] == "delete_after_create_in_one_batch_leaves_the_tombstone")
    [segment] = Planner(case["known"]).plan(wire(*case["events"])).segments
    assert segment.tracks is not None
    tombstone, live = segment.tracks.to_pylist()
    assert live == {
        "did": A, "rkey": "3mmoojp7etg2h", "rev": "3mmoojp7vgo2b", "cid": case["events"][1]["commit"]["cid"],
        "deleted": False, "title": "Song", "artist": "Artist", "album": None,
        "audio_url": "https://audio.example.r2.dev/a.mp3", "file_type": "mp3", "duration": None,
        "created_at": "2026-05-25T14:00:00.000Z", "created_us": 1779717600000000, "event_time_us": 1779719009132432,
        "first_seen_us": 1779719009132432, "proof": "pending",  # the stream's record waits for its PDS's proof
    }
    assert tombstone == {
        "did": A, "rkey": "3mmoojp7etg2g", "rev": "3mmoojp7vgo2c", "cid": None, "deleted": True, "title": None,
        "artist": None, "album": None, "audio_url": None, "file_type": None, "duration": None, "created_at": None,
        "created_us": None, "event_time_us": 1779719009132433,
        "first_seen_us": 1779719009132431,  # the create came first: a new row is first seen at the create
        "proof": "pending",  # a deletion is proven too: a forged one would hide a real track
    }


def test_known_accounts_grow_with_creates_across_batches() -> None:
    case = next(c for c in CASES if c["name"] == "create_by_a_new_account_makes_it_new_and_resolves_it")
    planner = Planner()
    first = planner.plan(wire(*case["events"]))
    again = planner.plan(wire(*case["events"]))
    since = case["events"][0]["time_us"]
    assert (first.new_accounts, again.new_accounts, again.identities, planner.known) == ({A: since}, {}, set(), {A: since})


def test_golden_v1_capture_of_strangers_changes_nothing_but_the_cursor() -> None:
    batch = Planner().plan(wire(*golden_events()))
    assert summary(batch) == {
        "segments": [], "rejections": [], "new_accounts": {}, "identities": [],
        "cursor": 1779719010689411, "counts": {"ignored": 8},
    }


def test_golden_v1_capture_with_its_account_known() -> None:
    batch = Planner({GOLDEN_ACCOUNT: 0}).plan(wire(*golden_events()))
    [event] = [e for e in golden_events() if e["kind"] == "account"]
    at_us = us_from_iso(event["account"]["time"])
    assert summary(batch) == {
        "segments": [{"accounts": [[GOLDEN_ACCOUNT, at_us, 30340180351, True, None, None, None]], "tracks": []}],
        "rejections": [], "new_accounts": {},
        "identities": [GOLDEN_ACCOUNT], "cursor": 1779719010689411,
        "counts": {"ignored": 8, "identity": 1, "account": 1},
    }


def test_a_record_that_is_not_what_its_cid_names_is_rejected_when_records_are_proven() -> None:
    """The proof checks the event's CID, so the body beside it must be that CID's record."""
    record = track_record("Real", "Artist", "https://audio.example.r2.dev/a.mp3")
    honest = commit(A, "3mmoojp7etg2g", "3mmoojp7vgo2a", "create", record)
    tampered = commit(A, "3mmoojp7etg2g", "3mmoojp7vgo2b", "create", record | {"title": "Tampered"}, cid=honest["commit"]["cid"])
    batch = Planner().plan(wire(honest, tampered))
    assert [r.reason for r in batch.rejections] == [
        f"cid: the record hashes to {record_cid(record | {'title': 'Tampered'})}, not the event's {honest['commit']['cid']}"
    ]
    assert [row["rev"] for row in tracks(batch.segments[0])] == ["3mmoojp7vgo2a"]
    # Unproven records are taken as they come; a record this service wrote itself is proven already.
    for planner, proof in ((Planner(verify=False), None), (Planner(), PROVEN)):
        batch = planner.plan(wire(tampered), proof)
        assert (batch.rejections, [row["title"] for row in tracks_full(batch)]) == ([], ["Tampered"])


def tracks_full(batch: Batch) -> list[dict[str, Any]]:
    return [row for segment in batch.segments if segment.tracks is not None for row in segment.tracks.to_pylist()]
