"""The whole indexer in-process: a real Jetstream server, a real audio host, and the real PLC directory
of the local PDS for handles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from indexer.atproto import tid
from indexer.config import Settings
from indexer.db.duckdb_store import DuckDBStore
from indexer.ingest.service import Indexer
from tests.fixtures.pds import LocalPds
from tests.running import indexer_settings, indexing_file
from tests.servers.audio import AudioServer
from tests.servers.events import account, commit, identity, now_us, track_record
from tests.servers.jetstream import JetstreamServer
from tests.waiting import eventually

pytestmark = pytest.mark.slow  # end to end: real processes and servers


def config(server: JetstreamServer, plc_url: str, nameserver: str | None = None, **variables: Any) -> Settings:
    """`nameserver`: the DNS by which the PDS's handles resolve back (LocalPds.nameserver)."""
    dns = {"RELAY_DNS_NAMESERVERS": nameserver} if nameserver else {}
    return indexer_settings(server.url, RELAY_PLC_URL=plc_url, **dns, **variables)


def create(did: str, url: str, title: str = "Song", t: int | None = None, **record: Any) -> dict[str, Any]:
    t = now_us() if t is None else t
    key = tid.encode(t, 9)
    body = {**track_record(title, "Artist", url, created_at="2026-01-01T00:00:00Z"), **record}
    return commit(did, key, key, "create", body, time_us=t)


def query(indexer: Indexer, sql: str, *params: Any) -> list[tuple]:
    store = indexer.index.store
    assert isinstance(store, DuckDBStore)
    return store.reader().execute(sql, list(params)).fetchall()




async def test_tracks_are_checked_and_only_real_audio_is_verified(
    tmp_path: Path, audio_server: AudioServer, local_pds: LocalPds
) -> None:
    alice = local_pds.account("ixalice")
    events = [
        create(alice.did, audio_server.url("/audio/good.mp3"), "Good"),
        create(alice.did, audio_server.url("/status/404"), "Missing"),
        create(alice.did, audio_server.url("/html/page"), "Not audio"),
        create(alice.did, audio_server.url("/status/503"), "Down"),
        create(alice.did, "http://10.0.0.1/a.mp3", "Private"),
        create(alice.did, audio_server.url("/audio/bad.mp3"), "Bad type", fileType="aac"),
    ]
    async with JetstreamServer(events) as server:
        async with indexing_file(
            config(server, local_pds.plc_url, local_pds.nameserver), tmp_path / "db.duckdb", events[0]["time_us"]
        ) as indexer:
            await eventually(lambda: query(indexer, "SELECT count(*) FROM tracks WHERE audio_state <> 'pending'") == [(5,)])
            await eventually(lambda: query(indexer, "SELECT handle FROM accounts") == [(alice.handle,)])
            states = dict(query(indexer, "SELECT title, audio_state FROM tracks"))
            rejected = query(indexer, "SELECT reason FROM rejections")
    assert states == {
        "Good": "verified",
        "Missing": "unavailable",
        "Not audio": "unavailable",
        "Down": "unreachable",
        "Private": "refused",
    }
    assert len(rejected) == 1 and "fileType" in rejected[0][0]
    assert audio_server.hits["/status/503"] == 2  # retried, then given up


async def test_identity_event_refreshes_the_handle_from_the_did_document(
    tmp_path: Path, audio_server: AudioServer, local_pds: LocalPds
) -> None:
    bob = local_pds.create_account("ixbob")
    first = create(bob.did, audio_server.url("/audio/b.mp3"))
    async with JetstreamServer([first]) as server:
        async with indexing_file(
            config(server, local_pds.plc_url, local_pds.nameserver), tmp_path / "db.duckdb", first["time_us"]
        ) as indexer:
            await eventually(lambda: query(indexer, "SELECT handle FROM accounts") == [(bob.handle,)])
            new_handle = f"r{bob.handle}"
            response = httpx.post(
                f"{local_pds.pds_url}/xrpc/com.atproto.identity.updateHandle",
                json={"handle": new_handle},
                headers=bob.auth_headers,
            )
            assert response.status_code == 200, response.text
            local_pds.prove_handle(new_handle, bob.did)
            # The event claims a different handle: the indexer must believe the DID document, not the event.
            server.append(identity(bob.did, "liar.test"))
            await eventually(lambda: query(indexer, "SELECT handle FROM accounts") == [(new_handle,)])


async def test_takedown_hides_and_deletion_purges(tmp_path: Path, audio_server: AudioServer) -> None:
    did = "did:plc:cccccccccccccccccccccccc"
    first = create(did, audio_server.url("/audio/c.mp3"))
    async with JetstreamServer([first]) as server:
        async with indexing_file(config(server, "http://127.0.0.1:9"), tmp_path / "db.duckdb", first["time_us"]) as indexer:
            visible = "SELECT count(*) FROM tracks WHERE audio_state = 'verified' AND NOT hidden AND NOT deleted"
            await eventually(lambda: query(indexer, visible) == [(1,)])
            server.append(account(did, False, "takendown"))
            await eventually(lambda: query(indexer, visible) == [(0,)])
            server.append(account(did, True))
            await eventually(lambda: query(indexer, visible) == [(1,)])
            server.append(account(did, False, "deleted"))
            await eventually(lambda: query(indexer, "SELECT deleted FROM tracks") == [(True,)])


async def test_pending_checks_survive_a_restart(tmp_path: Path, audio_server: AudioServer) -> None:
    did = "did:plc:dddddddddddddddddddddddd"
    slow = create(did, audio_server.url("/slow/30"))
    path = tmp_path / "db.duckdb"
    async with JetstreamServer([slow]) as server:
        settings = config(server, "http://127.0.0.1:9", RELAY_AUDIO_TIMEOUT_SECONDS=30.0)
        async with indexing_file(settings, path, slow["time_us"]) as indexer:
            await eventually(lambda: query(indexer, "SELECT audio_state FROM tracks") == [("pending",)])
            await eventually(lambda: audio_server.hits["/slow/30"] == 1)
        # Stopped mid-check: the track is still pending in the store, and the next start checks it again.
        store = DuckDBStore(path)
        assert store.pending_urls() == [audio_server.url("/slow/30")]
        store.close()
        fast = config(server, "http://127.0.0.1:9", RELAY_AUDIO_TIMEOUT_SECONDS=0.2, RELAY_AUDIO_RETRIES=1)
        async with indexing_file(fast, path, None) as indexer:
            await eventually(lambda: query(indexer, "SELECT audio_state FROM tracks") == [("unreachable",)])


async def test_status_names_the_host_and_the_work_in_hand(tmp_path: Path, audio_server: AudioServer) -> None:
    did = "did:plc:eeeeeeeeeeeeeeeeeeeeeeee"
    slow = create(did, audio_server.url("/slow/30"))
    async with JetstreamServer([slow]) as server:
        settings = config(server, "http://127.0.0.1:9", RELAY_AUDIO_TIMEOUT_SECONDS=30.0)
        async with indexing_file(settings, tmp_path / "db.duckdb", slow["time_us"]) as indexer:
            await eventually(lambda: audio_server.hits["/slow/30"] == 1)
            await eventually(lambda: indexer.status()["jetstream"] == server.url)  # the feed reports it
            status = indexer.status()
            assert status["cursor"] == slow["time_us"]
            assert status["audioChecksOutstanding"] == 1
        assert indexer.status()["jetstream"] is None
