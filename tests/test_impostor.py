"""Two accounts claim one handle: only the account the handle resolves back to is shown under it, and
`actor=<handle>` finds only that account, whichever of the two was resolved last. Through Jetstream (a real
`serve` process) and through publishing (the service's own write path), against the reference PDS, with
the impostor's DID document rewritten at the wire (the PLC proxy) to claim the owner's handle. And a handle
that stops resolving back (its domain changes hands) is shown no more once verified again."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from indexer.db.duckdb_store import DuckDBStore
from tests.builders import NO_BACKFILL
from tests.fixtures.pds import LocalPds, PdsAccount
from tests.fixtures.publish import start_service
from tests.pds_writes import Repo, rkey_of
from tests.running import indexer_settings, indexing_file
from tests.servers.audio import AudioServer
from tests.servers.jetstream import JetstreamServer
from tests.servers.pds_proxy import PdsProxy
from tests.waiting import eventually

pytestmark = pytest.mark.slow  # end to end: the reference PDS, real processes

MP3 = Path(__file__).parent / "data" / "tone-3s.mp3"


def claiming(impostor: PdsAccount, handle: str) -> Any:
    """The proxy's document hook: the impostor's DID document claims `handle`; every other passes as is."""

    def rewrite(document: dict[str, Any]) -> dict[str, Any]:
        if document.get("id") == impostor.did:
            document["alsoKnownAs"] = [f"at://{handle}"]
        return document

    return rewrite


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, **params: str) -> dict[str, Any]:
    try:
        response = httpx.get(url, params=params, timeout=10)
    except httpx.TransportError:
        return {}
    return dict(response.json())


def authors(feed: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    """title -> (author did, author handle) of a page of track views."""
    return {view["title"]: (view["author"]["did"], view["author"].get("handle")) for view in feed.get("tracks", [])}


async def test_an_impostor_on_the_stream_is_never_shown_under_the_handle_it_claims(
    tmp_path: Path, audio_server: AudioServer, local_pds: LocalPds
) -> None:
    owner = Repo(local_pds, local_pds.create_account("owner"), audio_server)
    impostor = Repo(local_pds, local_pds.create_account("impostor"), audio_server)
    # The impostor's records come last, so its document is the last one resolved.
    events = [owner.create("Owner's song"), impostor.create("Impostor's song"), impostor.create("Another fake")]
    port = free_port()
    with PdsProxy(local_pds.pds_url, local_pds.plc_url) as proxy:
        proxy.documents = claiming(impostor.account, owner.account.handle)
        async with JetstreamServer() as server:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "R2_"))},
                **NO_BACKFILL,  # never the public relay
                "RELAY_DB_PATH": str(tmp_path / "serve.duckdb"),
                "RELAY_AUDIO_DIR": str(tmp_path / "audio"),
                "RELAY_JETSTREAM_URLS": server.url,
                "RELAY_ALLOW_INSECURE": "true",
                "RELAY_PLC_URL": proxy.url,
                "RELAY_DNS_NAMESERVERS": local_pds.nameserver,
                "RELAY_BATCH_SECONDS": "0.05",
                "RELAY_PORT": str(port),
                "RELAY_LOG_LEVEL": "WARNING",
            }
            process = await asyncio.create_subprocess_exec(sys.executable, "-m", "appview_api.cli", "serve", env=env)
            base = f"http://127.0.0.1:{port}/xrpc"
            try:
                await eventually(lambda: len(server.connections) > 0, 60)
                server.append(events)
                await eventually(lambda: len(authors(get(f"{base}/app.relay.feed.getTracks"))) == 3, 60)
                feed = authors(get(f"{base}/app.relay.feed.getTracks"))
                by_handle = authors(get(f"{base}/app.relay.actor.getTracks", actor=owner.account.handle))
                by_did = authors(get(f"{base}/app.relay.actor.getTracks", actor=impostor.did))
                one = get(
                    f"{base}/app.relay.track.getTrack", uri=f"at://{impostor.did}/app.relay.track/{rkey_of(events[1])}"
                )
            finally:
                process.send_signal(signal.SIGTERM)
                assert await process.wait() == 0

    assert feed == {
        "Owner's song": (owner.did, owner.account.handle),
        "Impostor's song": (impostor.did, "handle.invalid"),
        "Another fake": (impostor.did, "handle.invalid"),
    }
    assert by_handle == {"Owner's song": (owner.did, owner.account.handle)}
    assert by_did == {
        "Impostor's song": (impostor.did, "handle.invalid"),
        "Another fake": (impostor.did, "handle.invalid"),
    }
    assert one["track"]["author"] == {"did": impostor.did, "handle": "handle.invalid"}


def test_an_impostor_publishing_is_never_shown_under_the_handle_it_claims(tmp_path: Path, local_pds: LocalPds) -> None:
    owner = local_pds.create_account("pubowner")
    impostor = local_pds.create_account("pubimpostor")
    with PdsProxy(local_pds.pds_url, local_pds.plc_url) as proxy:
        proxy.documents = claiming(impostor, owner.handle)
        with start_service(tmp_path, local_pds, RELAY_PLC_URL=proxy.url) as service:
            # The owner first, then the impostor: the impostor is the last account resolved.
            for account, title in ((owner, "Owner's upload"), (impostor, "Impostor's upload")):
                response = service.publish(account, MP3, title=title)
                assert response.status_code == 200, response.text
            feed = authors(service.client.get("/xrpc/app.relay.feed.getTracks").json())
            by_handle = authors(
                service.client.get("/xrpc/app.relay.actor.getTracks", params={"actor": owner.handle}).json()
            )
            fake_handle = service.client.get("/xrpc/app.relay.actor.getTracks", params={"actor": impostor.handle})

    assert feed == {"Owner's upload": (owner.did, owner.handle), "Impostor's upload": (impostor.did, "handle.invalid")}
    assert by_handle == {"Owner's upload": (owner.did, owner.handle)}
    # The impostor's own PDS handle is no longer in its document, so nothing answers to it either.
    assert fake_handle.status_code == 400
    assert fake_handle.json()["error"] == "ActorNotFound"


async def test_a_handle_that_stops_resolving_back_is_verified_again_and_shown_no_more(
    tmp_path: Path, audio_server: AudioServer, local_pds: LocalPds
) -> None:
    repo = Repo(local_pds, local_pds.create_account("drifter"), audio_server)
    event = repo.create("Song")
    txt = (f"_atproto.{repo.account.handle}", "TXT")
    async with JetstreamServer([event]) as server:
        config = indexer_settings(
            server.url,
            RELAY_PLC_URL=local_pds.plc_url,
            RELAY_DNS_NAMESERVERS=local_pds.nameserver,
            RELAY_HANDLE_RECHECK_SECONDS=0.4,
            RELAY_HANDLE_RECHECKS_PER_HOUR=360_000,
        )
        async with indexing_file(config, tmp_path / "db.duckdb", event["time_us"]) as indexer:
            store = indexer.index.store
            assert isinstance(store, DuckDBStore)

            def handle() -> list[tuple[Any, ...]]:
                return store.reader().execute("SELECT handle FROM accounts WHERE did = ?", [repo.did]).fetchall()

            await eventually(lambda: handle() == [(repo.account.handle,)], 30)
            # The domain changes hands: its TXT record now names someone else.
            local_pds.dns.records[txt] = ["did=did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"]
            await eventually(lambda: handle() == [("handle.invalid",)], 30)
            local_pds.dns.records[txt] = [f"did={repo.did}"]
            await eventually(lambda: handle() == [(repo.account.handle,)], 30)
