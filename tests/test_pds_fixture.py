"""The local PDS fixture is a real atproto network: records round-trip, DIDs resolve, nothing leaves loopback."""

from __future__ import annotations

import ipaddress

import psutil
import pytest
from atproto import AsyncClient, AsyncIdResolver, models

from indexer.atproto.tid import TidClock
from tests.fixtures.pds import LocalPds

pytestmark = pytest.mark.slow  # end to end: real processes and servers

TRACK = {
    "$type": "app.relay.track",
    "title": "Loopback Blues",
    "artist": "The Fixtures",
    "audioUrl": "https://audio.example.test/" + "a" * 64 + ".mp3",
    "fileType": "mp3",
    "duration": 3,
    "createdAt": "2025-10-28T22:30:00.000Z",
}


async def test_track_record_round_trips_through_the_pds(local_pds: LocalPds) -> None:
    account = local_pds.account("roundtrip")
    client = AsyncClient(base_url=local_pds.pds_url)
    await client.login(session_string=account.session_string, fetch_bsky_profile=False)
    rkey = TidClock().next()

    put = await client.com.atproto.repo.put_record(
        models.ComAtprotoRepoPutRecord.Data(repo=account.did, collection="app.relay.track", rkey=rkey, record=TRACK)
    )
    got = await client.com.atproto.repo.get_record(
        models.ComAtprotoRepoGetRecord.Params(repo=account.did, collection="app.relay.track", rkey=rkey)
    )
    listed = await client.com.atproto.repo.list_records(
        models.ComAtprotoRepoListRecords.Params(repo=account.did, collection="app.relay.track")
    )

    assert put.uri == f"at://{account.did}/app.relay.track/{rkey}"
    assert put.validation_status == "unknown"
    assert got.uri == put.uri
    assert got.cid == put.cid
    assert got.value["title"] == "Loopback Blues"
    assert got.value["duration"] == 3
    assert [(r.uri, r.cid) for r in listed.records] == [(put.uri, put.cid)]


async def test_account_did_resolves_through_the_local_plc(local_pds: LocalPds) -> None:
    account = local_pds.create_account("resolver")

    doc = await AsyncIdResolver(plc_url=local_pds.plc_url).did.ensure_resolve(account.did)

    assert account.did.startswith("did:plc:")
    assert account.handle.endswith(".test")
    assert doc.id == account.did
    assert doc.also_known_as == [f"at://{account.handle}"]
    assert doc.get_pds_endpoint() == local_pds.pds_public_url


def test_same_name_reuses_the_session(local_pds: LocalPds) -> None:
    assert local_pds.account("reused") is local_pds.account("reused")
    assert local_pds.account("reused").did != local_pds.account("other").did


def test_pds_listens_on_loopback_only(local_pds: LocalPds) -> None:
    process = psutil.Process(local_pds.pid)
    listening = [c.laddr for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]

    assert len(listening) >= 2  # the PLC directory and the PDS
    assert all(ipaddress.ip_address(addr.ip).is_loopback for addr in listening)
    assert {f"http://127.0.0.1:{addr.port}" for addr in listening} >= {local_pds.pds_url, local_pds.plc_url}
