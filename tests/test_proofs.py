"""Record proofs end to end: records written to Bluesky's reference PDS, events built from its real commits
(rev, cid, record) replayed by the test Jetstream, and the indexer asking the PDS to prove each one, through
a proxy that can fail, slow down or tamper with what the PDS answers (tests/servers/pds_proxy.py).

A record shows only once its PDS proved it and its audio answered; each outcome (proven, superseded,
forged, unreachable) is asserted exactly, with what it leaves in the index and in `rejections`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from indexer import metrics
from indexer.atproto import tid
from indexer.config import Settings
from indexer.db.duckdb_store import DuckDBStore
from indexer.ingest.service import Indexer
from tests.builders import NO_BACKFILL
from tests.fixtures.pds import LocalPds
from tests.pds_writes import TRACK, Repo, rkey_of
from tests.repo_builders import multikey, new_key
from tests.running import indexer_settings, indexing_file
from tests.servers.audio import AudioServer
from tests.servers.events import commit, now_us, record_cid
from tests.servers.jetstream import JetstreamServer
from tests.servers.pds_proxy import PdsProxy
from tests.waiting import eventually

pytestmark = pytest.mark.slow  # end to end: the reference PDS, real servers

GET_RECORD = "com.atproto.sync.getRecord"


def settings(server: JetstreamServer, proxy: PdsProxy, pds: LocalPds, **variables: Any) -> Settings:
    """Proofs on, through the proxy (it is the PLC directory, and names itself as every account's PDS)."""
    quick = {
        "RELAY_VERIFY_RECORDS": True,
        "RELAY_PROOF_RETRIES": 1,
        "RELAY_PROOF_RETRY_SECONDS": 0.2,
        "RELAY_PROOF_TIMEOUT_SECONDS": 2.0,
    }
    return indexer_settings(
        server.url, RELAY_PLC_URL=proxy.url, RELAY_DNS_NAMESERVERS=pds.nameserver, **(quick | variables)
    )


def query(indexer: Indexer, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    store = indexer.index.store
    assert isinstance(store, DuckDBStore)
    return store.reader().execute(sql, list(params)).fetchall()


def rows(indexer: Indexer, did: str) -> dict[str, tuple[Any, ...]]:
    """rkey -> (title, proof, deleted, rev) for the account's tracks."""
    found = query(indexer, "SELECT rkey, title, proof, deleted, rev FROM tracks WHERE did = ?", did)
    return {rkey: tuple(rest) for rkey, *rest in found}


def shown(indexer: Indexer) -> dict[str, str]:
    """rkey -> title of what the API may serve (the catalog's own query)."""
    with indexer.index.store.catalog() as snapshot:
        return {row.rkey: row.title for rows in snapshot.tracks(None) for row in rows}


def settled(indexer: Indexer, tracks: int) -> bool:
    """All `tracks` stored, and none waiting for its proof."""
    return query(indexer, "SELECT count(*), count(*) FILTER (proof = 'pending') FROM tracks") == [(tracks, 0)]


def proofs_counted() -> dict[str, float]:
    names = ("proven", "superseded", "forged", "unreachable")
    return {name: metrics.PROOFS.labels(outcome=name)._value.get() for name in names}


async def test_each_outcome_of_a_proof_against_the_reference_pds(
    tmp_path: Path, audio_server: AudioServer, local_pds: LocalPds
) -> None:
    repo = Repo(local_pds, local_pds.create_account("outcomes"), audio_server)
    real = repo.create("Real")
    # Updated on the PDS after the create the stream carries: the PDS's newer record supersedes it.
    before = repo.create("Before")
    repo.update(rkey_of(before), "After")
    # Deleted and created again under the same key: the stream carries all three.
    again = [repo.create("Once")]
    again += [repo.delete(rkey_of(again[0])), repo.create("Twice", rkey=rkey_of(again[0]))]
    # Deleted on the PDS; the stream carries only the create.
    gone = repo.create("Gone")
    repo.delete(rkey_of(gone))
    # The PDS's latest commit, announced with another record (and that record's own CID, so it parses).
    last = repo.create("Honest")
    forged_record = repo.record("Forged")
    differing = commit(repo.did, rkey_of(last), last["commit"]["rev"], "create", forged_record)
    assert differing["commit"]["cid"] == record_cid(forged_record) != last["commit"]["cid"]
    head = repo.rev()
    # An rkey the PDS never had, at a rev ahead of its repository.
    never_key = tid.encode(now_us(), 3)
    never = commit(repo.did, never_key, tid.encode(now_us(), 4), "create", repo.record("Never"))
    assert never["commit"]["rev"] > head

    events = [real, before, *again, gone, differing, never]
    counted = proofs_counted()
    with PdsProxy(local_pds.pds_url, local_pds.plc_url) as proxy:
        async with JetstreamServer(events) as server:
            config = settings(server, proxy, local_pds)
            async with indexing_file(config, tmp_path / "db.duckdb", events[0]["time_us"]) as indexer:
                await eventually(lambda: settled(indexer, 6) and len(shown(indexer)) == 4, 30)
                tracks = rows(indexer, repo.did)
                visible = shown(indexer)
                rejected = query(indexer, "SELECT uri, rev, reason FROM rejections ORDER BY reason")
        fetched = sorted(q for nsid, q, _ in proxy.log if nsid == GET_RECORD)

    twice = tracks.pop(rkey_of(again[0]))  # at its own rev, or the head's if its create was proved first
    assert twice in (("Twice", "proven", False, again[2]["commit"]["rev"]), ("Twice", "proven", False, head))
    assert tracks == {
        rkey_of(real): ("Real", "proven", False, real["commit"]["rev"]),
        rkey_of(before): ("After", "proven", False, head),
        rkey_of(gone): (None, "proven", True, head),
        never_key: (None, "proven", True, head),
        rkey_of(last): ("Honest", "proven", False, last["commit"]["rev"]),
    }
    assert visible == {
        rkey_of(real): "Real",
        rkey_of(before): "After",
        rkey_of(again[0]): "Twice",
        rkey_of(last): "Honest",
    }
    uri = f"at://{repo.did}/{TRACK}/"
    assert rejected == [
        (
            uri + rkey_of(last),
            last["commit"]["rev"],
            f"unproven: at rev {head} the PDS holds record {last['commit']['cid']}, "
            f"not the event's record {differing['commit']['cid']}",
        ),
        (
            uri + never_key,
            never["commit"]["rev"],
            f"unproven: the PDS's repository is at rev {head}, older than the event's {never['commit']['rev']}",
        ),
    ]
    # Each event's claim is asked once (the stream's three events of one key may be planned as one).
    assert len(fetched) == len(set(fetched)) and 6 <= len(fetched) <= 8
    counts = {name: value - counted[name] for name, value in proofs_counted().items()}
    assert (counts["forged"], counts["unreachable"]) == (2, 0)
    assert counts["proven"] + counts["superseded"] == len(fetched) - 2 and counts["superseded"] >= 2


async def test_answers_that_prove_nothing_are_forged_and_a_rotated_key_is_fetched_again(
    tmp_path: Path, audio_server: AudioServer, local_pds: LocalPds
) -> None:
    flipped = Repo(local_pds, local_pds.create_account("flipped"), audio_server)
    stranger = Repo(local_pds, local_pds.create_account("stranger"), audio_server)
    rotated = Repo(local_pds, local_pds.create_account("rotated"), audio_server)
    events = [flipped.create("Flip me"), stranger.create("Signed by another"), rotated.create("Rotated key")]
    other_key = {"type": "Multikey", "publicKeyMultibase": multikey(new_key())}
    rotations = {rotated.did: False}  # True once the PLC serves the account's real key

    def documents(document: dict[str, Any]) -> dict[str, Any]:
        if document["id"] == stranger.did or (document["id"] in rotations and not rotations[document["id"]]):
            for method in document["verificationMethod"]:
                method.update(other_key, id=method["id"], controller=method["controller"])
        return document

    def rotate() -> None:
        """The key rotates while the indexer holds the old document: its proof must fetch it anew."""
        if rotated.did in unquote(proxy.log[-1][1]):
            rotations[rotated.did] = True

    with PdsProxy(local_pds.pds_url, local_pds.plc_url) as proxy:
        proxy.documents = documents
        proxy.before[GET_RECORD] = rotate
        proxy.rewrite[GET_RECORD] = lambda car: car.replace(b"Flip me", b"Flip Me")
        async with JetstreamServer(events) as server:
            config = settings(server, proxy, local_pds)
            async with indexing_file(config, tmp_path / "db.duckdb", events[0]["time_us"]) as indexer:
                await eventually(lambda: settled(indexer, 3), 30)
                proofs = dict(query(indexer, "SELECT title, proof FROM tracks"))
                rejected = dict(query(indexer, "SELECT uri, reason FROM rejections"))
                await eventually(lambda: len(shown(indexer)) == 1, 30)
                visible = list(shown(indexer).values())
        document_fetches = [nsid for nsid, _, _ in proxy.log if nsid == f"/{rotated.did}"]

    assert proofs == {"Flip me": "forged", "Signed by another": "forged", "Rotated key": "proven"}
    assert visible == ["Rotated key"]
    flipped_cid = events[0]["commit"]["cid"]
    assert rejected == {
        f"at://{flipped.did}/{TRACK}/{rkey_of(events[0])}": f"unproven: block {flipped_cid} does not match its hash",
        f"at://{stranger.did}/{TRACK}/{rkey_of(events[1])}": rejected[
            f"at://{stranger.did}/{TRACK}/{rkey_of(events[1])}"
        ],
    }
    reason = rejected[f"at://{stranger.did}/{TRACK}/{rkey_of(events[1])}"]
    assert reason.startswith("unproven: commit ") and reason.endswith(
        f"signature does not verify against {stranger.did}'s key"
    )
    assert len(document_fetches) >= 2  # the cached document, then once more when its key failed


async def test_a_pds_that_cannot_answer_is_asked_again_later_and_nothing_shows_meanwhile(
    tmp_path: Path, audio_server: AudioServer, local_pds: LocalPds
) -> None:
    repo = Repo(local_pds, local_pds.create_account("unreachable"), audio_server)
    first = repo.create("Down")
    with PdsProxy(local_pds.pds_url, local_pds.plc_url) as proxy:
        async with JetstreamServer([first]) as server:
            config = settings(server, proxy, local_pds, RELAY_PROOF_RETRIES=2, RELAY_PROOF_TIMEOUT_SECONDS=1.0)
            async with indexing_file(config, tmp_path / "db.duckdb", first["time_us"]) as indexer:

                def reason() -> list[tuple[Any, ...]]:
                    return query(indexer, "SELECT proof, proof_reason FROM tracks WHERE rkey = ?", rkey_of(first))

                async def outage(fault: Callable[[], None], expected: str) -> None:
                    fault()
                    event = repo.create(expected)
                    server.append(event)
                    await eventually(
                        lambda: (
                            query(indexer, "SELECT proof_reason FROM tracks WHERE rkey = ?", rkey_of(event))
                            == [(expected,)]
                        ),
                        30,
                    )
                    assert rkey_of(event) not in shown(indexer)
                    proxy.faults.clear()
                    proxy.delays.clear()
                    await eventually(lambda: rkey_of(event) in shown(indexer), 30)
                    assert query(indexer, "SELECT proof, proof_reason FROM tracks WHERE rkey = ?", rkey_of(event)) == [
                        ("proven", None)
                    ]

                proxy.faults[GET_RECORD] = 500
                await eventually(lambda: reason() == [("pending", "the PDS answered 500")], 30)
                assert shown(indexer) == {}
                proxy.faults.clear()
                await eventually(lambda: shown(indexer) == {rkey_of(first): "Down"}, 30)

                await outage(lambda: proxy.delays.update({GET_RECORD: 1.5}), "the PDS timed out")
                await outage(
                    lambda: proxy.faults.update({GET_RECORD: "drop"}), "the PDS is unreachable: RemoteProtocolError"
                )

                # 429 with Retry-After: the PDS is asked again no sooner than it said, within the same job.
                proxy.faults[GET_RECORD] = 429
                proxy.fault_headers[GET_RECORD] = {"Retry-After": "2"}
                proxy.fault_counts[GET_RECORD] = 1
                busy = repo.create("Busy")
                server.append(busy)
                await eventually(lambda: rkey_of(busy) in shown(indexer), 30)
        asked = [at for nsid, query_string, at in proxy.log if nsid == GET_RECORD and rkey_of(busy) in query_string]
    assert len(asked) == 2 and asked[1] - asked[0] >= 2.0


async def test_audio_that_goes_away_hides_its_tracks_until_it_comes_back(
    tmp_path: Path, audio_server: AudioServer, local_pds: LocalPds
) -> None:
    repo = Repo(local_pds, local_pds.create_account("linkrot"), audio_server)
    event = repo.create("Fragile")
    path = "/audio/Fragile.mp3"
    with PdsProxy(local_pds.pds_url, local_pds.plc_url) as proxy:
        async with JetstreamServer([event]) as server:
            config = settings(
                server, proxy, local_pds, RELAY_AUDIO_RECHECK_SECONDS=0.5, RELAY_AUDIO_RECHECKS_PER_HOUR=36_000
            )
            async with indexing_file(config, tmp_path / "db.duckdb", event["time_us"]) as indexer:
                await eventually(lambda: shown(indexer) == {rkey_of(event): "Fragile"}, 30)
                audio_server.overrides[path] = 404
                await eventually(lambda: shown(indexer) == {}, 30)
                assert query(indexer, "SELECT audio_state FROM tracks") == [("unavailable",)]
                del audio_server.overrides[path]
                await eventually(lambda: shown(indexer) == {rkey_of(event): "Fragile"}, 30)
                assert query(indexer, "SELECT audio_state, proof FROM tracks") == [("verified", "proven")]


async def test_kill_9_mid_verification_loses_no_proof_and_repeats_none(
    tmp_path: Path, audio_server: AudioServer, local_pds: LocalPds
) -> None:
    repo = Repo(local_pds, local_pds.create_account("restart"), audio_server)
    events = [repo.create(f"Song {n}") for n in range(12)]
    db = tmp_path / "restart.duckdb"
    with PdsProxy(local_pds.pds_url, local_pds.plc_url) as proxy:
        proxy.delays[GET_RECORD] = 0.5  # one at a time (RELAY_PROOF_CONCURRENCY=1): a kill lands mid-way
        async with JetstreamServer(events) as server:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "R2_"))},
                **NO_BACKFILL,  # never the public relay
                "RELAY_DB_PATH": str(db),
                "RELAY_JETSTREAM_URLS": server.url,
                "RELAY_ALLOW_INSECURE": "true",
                "RELAY_PLC_URL": proxy.url,
                "RELAY_DNS_NAMESERVERS": local_pds.nameserver,
                "RELAY_PROOF_CONCURRENCY": "1",
                "RELAY_BATCH_SECONDS": "0.05",
                "RELAY_LOG_LEVEL": "WARNING",
            }
            args = [sys.executable, "-m", "appview_api.cli", "replay", "--cursor", str(events[0]["time_us"])]
            process = await asyncio.create_subprocess_exec(*args, env=env)
            await eventually(lambda: sum(nsid == GET_RECORD for nsid, _, _ in proxy.log) >= 5, 60)
            process.send_signal(signal.SIGKILL)
            assert await process.wait() == -signal.SIGKILL

            store = DuckDBStore(db)
            try:
                proven_before = {
                    rkey
                    for (rkey,) in store.reader().execute("SELECT rkey FROM tracks WHERE proof = 'proven'").fetchall()
                }
                stored = store.reader().execute("SELECT count(*) FROM tracks").fetchone()
            finally:
                store.close()
            assert stored == (12,) and 3 <= len(proven_before) < 12
            calls_before = len(proxy.log)

            port = free_port()
            serve_args = [sys.executable, "-m", "appview_api.cli", "serve"]
            process = await asyncio.create_subprocess_exec(*serve_args, env={**env, "RELAY_PORT": str(port)})
            try:
                feed = f"http://127.0.0.1:{port}/xrpc/app.relay.feed.getTracks?limit=50"
                await eventually(lambda: visible_count(feed) == 12, 60)
                asked_after = [q for nsid, q, _ in proxy.log[calls_before:] if nsid == GET_RECORD]
            finally:
                process.send_signal(signal.SIGTERM)
                assert await process.wait() == 0

    store = DuckDBStore(db)
    try:
        proofs = store.reader().execute("SELECT proof, count(*) FROM tracks GROUP BY proof").fetchall()
    finally:
        store.close()
    assert proofs == [("proven", 12)]
    again = [rkey for rkey in proven_before if any(f"rkey={rkey}" in q for q in asked_after)]
    assert again == []
    assert len(asked_after) == 12 - len(proven_before)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def visible_count(feed: str) -> int:
    try:
        return len(httpx.get(feed).json()["tracks"])
    except httpx.TransportError:
        return -1
