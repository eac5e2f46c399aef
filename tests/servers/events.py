"""Jetstream v1 events as plain dicts, exactly the wire shape, for tests and the ingest benchmark.

Dicts rather than the indexer's models on purpose: the test server must be able to send what a real host
sends, including shapes the indexer rejects, so nothing here goes through `indexer.ingest.events`.
"""

from __future__ import annotations

import base64
import bisect
import functools
import hashlib
import itertools
import os
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from indexer.atproto import datamodel, tid
from indexer.errors import InvalidRecord

TRACK_COLLECTION = "app.relay.track"
# 2026-01-01T00:00:00Z: a fixed past start keeps synthetic runs identical and their createdAt never "future".
SYNTHETIC_START_US = 1_767_225_600_000_000
_CID_PREFIX = bytes((0x01, 0x71, 0x12, 0x20))  # CIDv1, dag-cbor, sha2-256, 32-byte digest
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_seq = itertools.count(1)
_last_us = 0


def shared_dir() -> Path:
    """The read-only Jetstream data (golden events, zstd dictionary) that lives beside the repo."""
    override = os.environ.get("RELAY_SHARED_DIR")
    base = Path(override) if override else Path(__file__).resolve().parents[2].parent / "shared"
    return base / "jetstream"


def golden_events() -> list[dict[str, Any]]:
    lines = (shared_dir() / "golden_v1.jsonl").read_bytes().splitlines()
    return [orjson.loads(line) for line in lines if line.strip()]


def now_us() -> int:
    """Wall-clock micros, strictly increasing across calls, like one Jetstream instance's clock."""
    global _last_us
    _last_us = max(time.time_ns() // 1000, _last_us + 1)
    return _last_us


def iso(time_us: int) -> str:
    return f"{_second(time_us // 1_000_000)}.{time_us // 1000 % 1000:03d}Z"


@functools.lru_cache(maxsize=64)
def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def fake_cid(data: bytes) -> str:
    """A well-formed CIDv1 string (what a PDS would print) derived from `data`; not a real block hash."""
    raw = _CID_PREFIX + hashlib.sha256(data).digest()
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


def record_cid(record: Any) -> str:
    """The record's real CID (its DAG-CBOR block's), as a PDS would announce it; for a value DAG-CBOR
    cannot hold (a float, say: a record the indexer must refuse anyway), a well-formed stand-in."""
    try:
        return datamodel.record_cid(record)
    except InvalidRecord:
        return fake_cid(orjson.dumps(record))


def track_record(
    title: str,
    artist: str,
    audio_url: str,
    file_type: str = "mp3",
    album: str | None = None,
    duration: int | None = None,
    created_at: str | None = None,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "$type": TRACK_COLLECTION,
        "title": title,
        "artist": artist,
        "audioUrl": audio_url,
        "fileType": file_type,
        "createdAt": created_at or iso(now_us()),
    }
    if album is not None:
        record["album"] = album
    if duration is not None:
        record["duration"] = duration
    return record


def commit(
    did: str,
    rkey: str,
    rev: str,
    operation: str,
    record: dict[str, Any] | None = None,
    cid: str | None = None,
    collection: str = TRACK_COLLECTION,
    time_us: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"rev": rev, "operation": operation, "collection": collection, "rkey": rkey}
    if operation != "delete":
        body["record"] = record
        body["cid"] = cid or record_cid(record)
    return {"did": did, "time_us": now_us() if time_us is None else time_us, "kind": "commit", "commit": body}


def identity(did: str, handle: str | None = None, seq: int | None = None, time_us: int | None = None) -> dict[str, Any]:
    time_us = now_us() if time_us is None else time_us
    body: dict[str, Any] = {"did": did, "seq": next(_seq) if seq is None else seq, "time": iso(time_us)}
    if handle is not None:
        body["handle"] = handle
    return {"did": did, "time_us": time_us, "kind": "identity", "identity": body}


def account(
    did: str, active: bool, status: str | None = None, seq: int | None = None, time_us: int | None = None
) -> dict[str, Any]:
    time_us = now_us() if time_us is None else time_us
    body: dict[str, Any] = {"active": active, "did": did, "seq": next(_seq) if seq is None else seq}
    if status is not None:
        body["status"] = status
    body["time"] = iso(time_us)
    return {"did": did, "time_us": time_us, "kind": "account", "account": body}


_WORDS = ("blue", "midnight", "static", "river", "golden", "echo", "paper", "summer", "neon", "hollow", "velvet")
_ALBUM_CHANCE = 0.3


def synthetic_track_events(
    n: int,
    *,
    audio_base_url: str,
    accounts: int = 2000,
    seed: int = 0,
    update_ratio: float = 0.1,
    delete_ratio: float = 0.05,
    start_time_us: int = SYNTHETIC_START_US,
) -> Iterator[dict[str, Any]]:
    """`n` app.relay.track commits, identical for the same arguments.

    Uploaders follow a Zipf-like spread (a few accounts post most tracks, then a long tail); updates and
    deletes hit records created earlier in the stream, with a newer rev, and time_us strictly increases.
    """
    rng = random.Random(seed)
    dids = ["did:plc:" + "".join(rng.choices(_B32, k=24)) for _ in range(accounts)]
    clocks = [rng.randrange(1024) for _ in range(accounts)]
    cum_weights = list(itertools.accumulate(1.0 / (rank + 1) ** 1.1 for rank in range(accounts)))
    total = cum_weights[-1]
    live: list[tuple[int, str]] = []  # (account index, rkey) of records not yet deleted
    now = start_time_us
    for _ in range(n):
        now += rng.randint(20, 2000)
        roll = rng.random()
        if live and roll < delete_ratio:
            slot = rng.randrange(len(live))
            live[slot], live[-1] = live[-1], live[slot]
            who, rkey = live.pop()
            yield commit(dids[who], rkey, tid.encode(now, clocks[who]), "delete", time_us=now)
            continue
        if live and roll < delete_ratio + update_ratio:
            who, rkey = live[rng.randrange(len(live))]
            operation = "update"
        else:
            who = bisect.bisect(cum_weights, rng.random() * total)
            rkey = ""
            operation = "create"
        rev = tid.encode(now, clocks[who])
        if operation == "create":
            rkey = rev
            live.append((who, rkey))
        record = track_record(
            title=f"{rng.choice(_WORDS).title()} {rng.choice(_WORDS).title()}",
            artist=f"artist {who}",
            audio_url=f"{audio_base_url}{rng.getrandbits(64):016x}.mp3",
            album=f"album {who}-{rng.randrange(5)}" if rng.random() < _ALBUM_CHANCE else None,
            duration=rng.randint(60, 480),
            created_at=iso(now),
        )
        yield commit(dids[who], rkey, rev, operation, record, time_us=now)
