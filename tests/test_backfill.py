"""Backfill end to end: accounts whose tracks (and records of other collections) were written to Bluesky's
reference PDS before the service started, a test relay on loopback that lists them from the PDS
(tests/servers/relay.py), the test Jetstream (which clamps old cursors as v1 does), and the PDS behind a
proxy that can fail or slow down (tests/servers/pds_proxy.py). Each outcome is asserted exactly: which rows
the index holds, at which rev, proven or not, and the account's sync state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from indexer.config import Settings
from indexer.db.duckdb_store import DuckDBStore
from indexer.ingest.service import Indexer
from tests.fixtures.pds import LocalPds
from tests.pds_writes import Repo, rkey_of
from tests.running import indexer_settings, running_indexer
from tests.servers.audio import AudioServer
from tests.servers.events import account, now_us
from tests.servers.jetstream import JetstreamServer
from tests.servers.pds_proxy import PdsProxy
from tests.servers.relay import LoopbackRelay
from tests.waiting import eventually

pytestmark = pytest.mark.slow  # end to end: the reference PDS, real servers

GET_REPO = "com.atproto.sync.getRepo"
OTHER = "app.relay.note"  # a collection of someone else's: in the repository, never indexed


def settings(
    server: JetstreamServer, proxy: PdsProxy, pds: LocalPds, relay: LoopbackRelay | None, **variables: Any
) -> Settings:
    """Backfill on, discovery through the test relay, proofs on, everything through the proxy."""
    quick = {
        "RELAY_VERIFY_RECORDS": True,
        "RELAY_PROOF_RETRIES": 1,
        "RELAY_PROOF_RETRY_SECONDS": 0.2,
        "RELAY_PROOF_TIMEOUT_SECONDS": 2.0,
        "RELAY_BACKFILL": True,
        "RELAY_BACKFILL_URLS": relay.url if relay is not None else "",
        "RELAY_BACKFILL_RETRIES": 1,
        "RELAY_BACKFILL_RETRY_SECONDS": 0.2,
        "RELAY_BACKFILL_TIMEOUT_SECONDS": 10.0,
    }
    return indexer_settings(
        server.url, RELAY_PLC_URL=proxy.url, RELAY_DNS_NAMESERVERS=pds.nameserver, **(quick | variables)
    )


@contextlib.asynccontextmanager
async def indexing(settings: Settings, path: Path, cursor: int | None = None) -> AsyncIterator[Indexer]:
    store = DuckDBStore(path)
    try:
        async with running_indexer(settings, store, cursor) as indexer:
            yield indexer
    finally:
        store.close()


def query(indexer: Indexer, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    store = indexer.index.store
    assert isinstance(store, DuckDBStore)
    return store.reader().execute(sql, list(params)).fetchall()


def rows(indexer: Indexer, did: str) -> dict[str, tuple[Any, ...]]:
    """rkey -> (title, proof, deleted) for the account's tracks."""
    found = query(indexer, "SELECT rkey, title, proof, deleted FROM tracks WHERE did = ?", did)
    return {rkey: tuple(rest) for rkey, *rest in found}


def shown(indexer: Indexer) -> dict[str, str]:
    with indexer.index.store.catalog() as snapshot:
        return {row.rkey: row.title for rows in snapshot.tracks(None) for row in rows}


def sync_state(indexer: Indexer, did: str) -> tuple[Any, ...] | None:
    found = query(indexer, "SELECT state, reason, rev, records FROM account_syncs WHERE did = ?", did)
    return found[0] if found else None


def synced(indexer: Indexer, *dids: str) -> Callable[[], bool]:
    return lambda: all((sync_state(indexer, did) or ("",))[0] == "synced" for did in dids)


def notes(repo: Repo, count: int) -> None:
    """`count` records of another collection, 200 a call (applyWrites)."""
    for start in range(0, count, 200):
        writes = [
            {"$type": "com.atproto.repo.applyWrites#create", "collection": OTHER, "value": {"$type": OTHER, "text": f"note {n}"}}
            for n in range(start, min(count, start + 200))
        ]
        response = httpx.post(
            f"{repo.pds.pds_url}/xrpc/com.atproto.repo.applyWrites",
            json={"repo": repo.did, "writes": writes},
            headers=repo.account.auth_headers,
            timeout=60,
        )
        response.raise_for_status()


def titles(repo_events: list[dict[str, Any]]) -> dict[str, str]:
    return {rkey_of(e): e["commit"]["record"]["title"] for e in repo_events}


async def test_every_track_appears_with_no_stream_event_and_stream_only_accounts_get_their_history(
    tmp_path: Path, audio_server: AudioServer, local_pds: LocalPds
) -> None:
    listed = [Repo(local_pds, local_pds.create_account("listed"), audio_server) for _ in range(2)]
    written = {repo.did: [repo.create(f"{repo.account.handle} {n}") for n in range(3)] for repo in listed}
    gone = listed[0].create("Deleted before we started")
    listed[0].delete(rkey_of(gone))
    for repo in listed:
        notes(repo, 5)
    unlisted = Repo(local_pds, local_pds.create_account("unlisted"), audio_server)
    older = [unlisted.create("Older one"), unlisted.create("Older two")]
    silent = Repo(local_pds, local_pds.create_account("silent"), audio_server)  # no tracks: never an account
    notes(silent, 3)
    with PdsProxy(local_pds.pds_url, local_pds.plc_url) as proxy, LoopbackRelay(local_pds.pds_url) as relay:
        relay.hidden.add(unlisted.did)
        relay.only = {repo.did for repo in [*listed, unlisted, silent]}
        async with JetstreamServer() as server:
            config = settings(server, proxy, local_pds, relay)
            # From a cursor: the stream's event below is delivered whenever the feed process connects.
            async with indexing(config, tmp_path / "db.duckdb", now_us()) as indexer:
                await eventually(synced(indexer, *written), 30)
                for repo in listed:
                    expected = {rkey: (title, "proven", False) for rkey, title in titles(written[repo.did]).items()}
                    assert rows(indexer, repo.did) == expected
                assert sync_state(indexer, silent.did) is None  # the relay lists holders of tracks only
                assert sync_state(indexer, unlisted.did) is None
                # The stream shows the unlisted account's newest track: its older ones come from its repository.
                newest = unlisted.create("Newest")
                server.append(newest)
                await eventually(synced(indexer, unlisted.did), 30)
                await eventually(lambda: rows(indexer, unlisted.did).get(rkey_of(newest), ("",))[1] == "proven", 30)
                assert rows(indexer, unlisted.did) == {
                    rkey: (title, "proven", False) for rkey, title in titles([*older, newest]).items()
                }
                everything = {**titles(older), **titles([newest])}
                for events in written.values():
                    everything |= titles(events)
                await eventually(lambda: shown(indexer) == everything, 30)
                assert query(indexer, "SELECT count(*) FROM rejections") == [(0,)]
                assert query(indexer, "SELECT count(*) FROM accounts") == [(3,)]
                health = indexer.status()
                assert health["discovering"] is None and health["windowGap"] is None
        assert {q["collection"][0] for q in relay.calls} == {"app.relay.track"}
        assert [q["limit"][0] for q in relay.calls] == ["2000"]
        assert proxy.calls.count(GET_REPO) == 3


async def test_events_during_a_sync_end_as_a_clean_run(
    tmp_path: Path, audio_server: AudioServer, local_pds: LocalPds
) -> None:
    repo = Repo(local_pds, local_pds.create_account("during"), audio_server)
    kept, edited, dropped = repo.create("Kept"), repo.create("Before edit"), repo.create("Dropped")
    later: list[dict[str, Any]] = []
    with PdsProxy(local_pds.pds_url, local_pds.plc_url) as proxy, LoopbackRelay(local_pds.pds_url) as relay:
        async with JetstreamServer() as server:
            loop = asyncio.get_running_loop()

            def meanwhile(car: bytes) -> bytes:
                """After the PDS answered getRepo, before the sync has it: the account writes, and the
                stream carries it, newer than the repository the sync holds."""
                if not later:
                    later.extend([
                        repo.update(rkey_of(edited), "After edit"),
                        repo.delete(rkey_of(dropped)),
                        repo.create("Created meanwhile"),
                    ])
                    loop.call_soon_threadsafe(server.append, later)
                    time.sleep(1.5)  # the stream's events commit (and are proved) before the sync does
                return car

            proxy.rewrite[GET_REPO] = meanwhile
            relay.only = {repo.did}
            config = settings(server, proxy, local_pds, relay)
            async with indexing(config, tmp_path / "db.duckdb", now_us()) as indexer:
                await eventually(synced(indexer, repo.did), 30)
                await eventually(lambda: query(indexer, "SELECT count(*) FROM tracks WHERE proof = 'pending'") == [(0,)], 30)
                assert rows(indexer, repo.did) == {
                    rkey_of(kept): ("Kept", "proven", False),
                    rkey_of(edited): ("After edit", "proven", False),
                    rkey_of(dropped): (None, "proven", True),
                    rkey_of(later[2]): ("Created meanwhile", "proven", False),
                }
                assert query(indexer, "SELECT count(*) FROM rejections") == [(0,)]


async def test_a_pds_that_fails_is_retried_and_a_deactivated_repository_hides_the_account(
    tmp_path: Path, audio_server: AudioServer, local_pds: LocalPds
) -> None:
    flaky = Repo(local_pds, local_pds.create_account("flaky"), audio_server)
    track = flaky.create("Eventually")
    leaving = Repo(local_pds, local_pds.create_account("leaving"), audio_server)
    leaving.create("Soon hidden")
    with PdsProxy(local_pds.pds_url, local_pds.plc_url) as proxy, LoopbackRelay(local_pds.pds_url) as relay:
        relay.only = {flaky.did, leaving.did}
        proxy.faults[GET_REPO], proxy.fault_counts[GET_REPO] = 500, 1
        async with JetstreamServer() as server:
            config = settings(server, proxy, local_pds, relay, RELAY_BACKFILL_TIMEOUT_SECONDS=1.5)
            async with indexing(config, tmp_path / "db.duckdb") as indexer:
                await eventually(synced(indexer, flaky.did, leaving.did), 30)
                assert rows(indexer, flaky.did) == {rkey_of(track): ("Eventually", "proven", False)}
                # A PDS busy (429, Retry-After) then slow: the next sync waits as asked, and still gets there.
                proxy.faults[GET_REPO], proxy.fault_counts[GET_REPO] = 429, 1
                proxy.fault_headers[GET_REPO] = {"retry-after": "1"}
                proxy.delays[GET_REPO] = 0.5
                asked = len(proxy.log)
                await indexer.request_backfill([flaky.did])

                def fetches() -> list[float]:
                    return [t for nsid, q, t in proxy.log[asked:] if nsid == GET_REPO and flaky.did in unquote(q)]

                await eventually(lambda: len(fetches()) == 2 and synced(indexer, flaky.did)(), 30)
                retried = fetches()
                assert retried[1] - retried[0] >= 1.5  # the slow answer (0.5 s), then the Retry-After (1 s)
                # A PDS slower than the timeout: failed, with its reason, and synced once it answers in time. (Last
                # of the faults: the proxy checks a fault after the delay, so a request it still holds would take it.)
                proxy.delays[GET_REPO] = 3.0
                await indexer.request_backfill([flaky.did])
                await eventually(lambda: sync_state(indexer, flaky.did)[:2] == ("failed", "the PDS timed out"), 30)
                proxy.delays.clear()
                await eventually(synced(indexer, flaky.did), 30)
                # Deactivated on the PDS itself: getRepo answers RepoDeactivated; the account is inactive.
                httpx.post(
                    f"{local_pds.pds_url}/xrpc/com.atproto.server.deactivateAccount", json={},
                    headers=leaving.account.auth_headers, timeout=30,
                ).raise_for_status()
                await indexer.request_backfill([leaving.did])
                await eventually(lambda: (sync_state(indexer, leaving.did) or ("",))[0] == "inactive", 30)
                assert query(indexer, "SELECT active, status FROM accounts WHERE did = ?", leaving.did) == [(False, "deactivated")]
                assert query(indexer, "SELECT hidden FROM tracks WHERE did = ?", leaving.did) == [(True,)]


async def test_a_track_deleted_while_down_past_the_window_is_gone_after_restart(
    tmp_path: Path, audio_server: AudioServer, local_pds: LocalPds
) -> None:
    repo = Repo(local_pds, local_pds.create_account("outage"), audio_server)
    first = repo.create("Deleted during the outage")
    stays = repo.create("Stays")
    db = tmp_path / "db.duckdb"
    with PdsProxy(local_pds.pds_url, local_pds.plc_url) as proxy:
        async with JetstreamServer([first, stays]) as server:
            config = settings(server, proxy, local_pds, None, RELAY_WINDOW_GAP_SECONDS=30, RELAY_REWIND_SECONDS=0)
            async with indexing(config, db, first["time_us"]) as indexer:
                await eventually(synced(indexer, repo.did), 30)
                await eventually(lambda: len(shown(indexer)) == 2, 30)
            # While down: the track is deleted, and the host's window moves past the deletion.
            deletion = repo.delete(rkey_of(first))
            server.append(deletion)
            later = account("did:plc:zzzzzzzzzzzzzzzzzzzzzzzz", True, time_us=deletion["time_us"] + 120_000_000)
            server.append(later)
            server.forget_before(deletion["time_us"] + 1)
            async with indexing(config, db) as indexer:
                await eventually(lambda: indexer.status()["windowGap"] is not None, 30)
                await eventually(lambda: rows(indexer, repo.did)[rkey_of(first)][2] is True, 30)
                assert rows(indexer, repo.did) == {
                    rkey_of(first): (None, "proven", True),
                    rkey_of(stays): ("Stays", "proven", False),
                }
                gap = indexer.index.status()["window_gap"]
                assert gap["firstEvent"] == later["time_us"] and gap["source"] == server.url
        assert proxy.calls.count(GET_REPO) == 2  # first seen on the stream, then again after the gap


async def test_a_repository_of_10000_other_records_and_50_tracks_within_the_byte_cap(
    tmp_path: Path, audio_server: AudioServer, local_pds: LocalPds
) -> None:
    from indexer.atproto.car import read_car
    from indexer.atproto.proof import repo_blocks

    repo = Repo(local_pds, local_pds.create_account("big"), audio_server)
    tracks = [repo.create(f"Big {n}") for n in range(50)]
    notes(repo, 10_000)
    async with httpx.AsyncClient(timeout=60) as client:
        async with client.stream("GET", f"{local_pds.pds_url}/xrpc/{GET_REPO}", params={"did": repo.did}) as response:
            car = await read_car(response.aiter_bytes(), max_bytes=64 * 1024 * 1024, keep=repo_blocks("app.relay.track"))
    # Held: the tree, the commit and the 50 tracks; every note was hash-checked and let go.
    assert len(car.dropped) == 10_000
    assert len([b for b in car.blocks.values() if not b.startswith(b"\xa2\x61\x65")]) == 51
    with PdsProxy(local_pds.pds_url, local_pds.plc_url) as proxy:
        async with JetstreamServer() as server:
            small = settings(server, proxy, local_pds, None, RELAY_BACKFILL_MAX_REPO_BYTES=car.size - 1)
            async with indexing(small, tmp_path / "small.duckdb") as indexer:
                await indexer.request_backfill([repo.did])
                await eventually(lambda: (sync_state(indexer, repo.did) or ("",))[0] == "failed", 30)
                assert sync_state(indexer, repo.did)[1] == f"the PDS's repository: CAR is larger than {car.size - 1} bytes"
            fits = settings(server, proxy, local_pds, None, RELAY_BACKFILL_MAX_REPO_BYTES=car.size)
            async with indexing(fits, tmp_path / "fits.duckdb") as indexer:
                await indexer.request_backfill([repo.did])
                await eventually(synced(indexer, repo.did), 60)
                assert rows(indexer, repo.did) == {rkey: (title, "proven", False) for rkey, title in titles(tracks).items()}
