"""The test Jetstream server and event composers, checked with a plain websockets client."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
import pytest
import zstandard
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from websockets.frames import Frame, Opcode

from indexer.atproto import tid
from indexer.ingest import events as wire
from tests.servers.events import (
    TRACK_COLLECTION,
    account,
    commit,
    golden_events,
    identity,
    shared_dir,
    synthetic_track_events,
    track_record,
)
from tests.servers.jetstream import JetstreamServer

ALICE, BOB = "did:plc:alice000000000000000000", "did:plc:bob00000000000000000000"
AUDIO = "http://127.0.0.1:9/audio/"


def track(did: str, time_us: int, collection: str = TRACK_COLLECTION) -> dict[str, Any]:
    rkey = tid.encode(time_us, 1)
    record = track_record(title="t", artist="a", audio_url=f"{AUDIO}x.mp3", created_at="2026-01-01T00:00:00.000Z")
    return commit(did, rkey, rkey, "create", record, collection=collection, time_us=time_us)


async def take(ws: ClientConnection, n: int) -> list[Any]:
    async with asyncio.timeout(5):  # a safety net against a hang, not a measurement
        return [await ws.recv() for _ in range(n)]


async def take_json(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    return [orjson.loads(message) for message in await take(ws, n)]


def query(url: str, **params: str | list[str]) -> str:
    pairs = [
        (key, value) for key, values in params.items() for value in ([values] if isinstance(values, str) else values)
    ]
    return url + "?" + "&".join(f"{key}={value}" for key, value in pairs)


async def test_fixture_starts_empty_on_loopback(jetstream: JetstreamServer) -> None:
    assert jetstream.url == f"ws://127.0.0.1:{jetstream.port}/subscribe"
    async with connect(query(jetstream.url, cursor="0")) as ws:
        jetstream.append(track(ALICE, 100))
        assert [event["time_us"] for event in await take_json(ws, 1)] == [100]
    assert jetstream.connections[0].sent == 1


async def test_replays_golden_events_as_text_frames(jetstream: JetstreamServer) -> None:
    jetstream.append(golden_events())
    async with connect(query(jetstream.url, cursor="0")) as ws:
        messages = await take(ws, 10)
    assert all(isinstance(message, str) for message in messages)
    assert [orjson.loads(message) for message in messages] == golden_events()


async def test_no_cursor_means_live_only(jetstream: JetstreamServer) -> None:
    jetstream.append([track(ALICE, 100), track(ALICE, 200)])
    async with connect(jetstream.url) as ws:
        jetstream.append(track(ALICE, 300))
        assert [event["time_us"] for event in await take_json(ws, 1)] == [300]


async def test_cursor_is_inclusive_then_continues_live(jetstream: JetstreamServer) -> None:
    jetstream.append([track(ALICE, 100), track(ALICE, 200), track(ALICE, 300)])
    async with connect(query(jetstream.url, cursor="200")) as ws:
        assert [event["time_us"] for event in await take_json(ws, 2)] == [200, 300]
        jetstream.append([track(ALICE, 400), track(ALICE, 50)])  # live events pass whatever their time
        assert [event["time_us"] for event in await take_json(ws, 2)] == [400, 50]
    assert jetstream.connections[0].cursor == 200


async def test_collection_filter_applies_to_commits_only(jetstream: JetstreamServer) -> None:
    jetstream.append(
        [
            track(ALICE, 1, "app.bsky.feed.post"),
            track(ALICE, 2),
            identity(ALICE, "alice.test", time_us=3),
            track(ALICE, 4, "app.relay.playlist"),
            account(BOB, False, "takendown", time_us=5),
            track(ALICE, 6, "app.relayx.track"),
            track(ALICE, 7, "app.bsky.feed.like"),
        ]
    )
    url = query(jetstream.url, cursor="0", wantedCollections=["app.relay.*", "app.bsky.feed.like"])
    async with connect(url) as ws:
        assert [event["time_us"] for event in await take_json(ws, 5)] == [2, 3, 4, 5, 7]
    assert jetstream.connections[0].sent == 5


async def test_did_filter_applies_to_every_kind(jetstream: JetstreamServer) -> None:
    jetstream.append([track(ALICE, 1), identity(BOB, time_us=2), account(ALICE, True, time_us=3), track(BOB, 4)])
    async with connect(query(jetstream.url, cursor="0", wantedDids=BOB)) as ws:
        assert [(event["kind"], event["time_us"]) for event in await take_json(ws, 2)] == [
            ("identity", 2),
            ("commit", 4),
        ]


async def test_compress_sends_one_dictionary_zstd_frame_per_event(jetstream: JetstreamServer) -> None:
    jetstream.append(golden_events())
    dictionary = zstandard.ZstdCompressionDict((shared_dir() / "zstd_dictionary_v1").read_bytes())
    decompressor = zstandard.ZstdDecompressor(dict_data=dictionary)
    async with connect(query(jetstream.url, cursor="0", compress="true")) as ws:
        frames = await take(ws, 10)
    assert all(isinstance(frame, bytes) for frame in frames)
    assert {zstandard.get_frame_parameters(frame).dict_id for frame in frames} == {1612007021}
    assert [orjson.loads(decompressor.decompress(frame)) for frame in frames] == golden_events()


async def test_live_append_reaches_every_matching_subscriber(jetstream: JetstreamServer) -> None:
    async with connect(jetstream.url) as plain, connect(query(jetstream.url, compress="true")) as packed:
        jetstream.append([track(ALICE, 1), track(BOB, 2)])
        assert [event["did"] for event in await take_json(plain, 2)] == [ALICE, BOB]
        assert len(await take(packed, 2)) == 2


async def test_subscriber_leaving_mid_replay_leaves_the_server_serving(
    jetstream: JetstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    jetstream.append([track(ALICE, t) for t in range(1, 5001)])
    # A client whose receive queue is full stops reading, so it never sees the close reply behind the
    # backlog: close_timeout is how long it waits before dropping TCP.
    async with connect(query(jetstream.url, cursor="0"), close_timeout=0.1) as ws:
        await take(ws, 1)
    async with connect(query(jetstream.url, cursor="4999")) as ws:
        assert [event["time_us"] for event in await take_json(ws, 2)] == [4999, 5000]
    assert [record.getMessage() for record in caplog.records if record.levelname == "ERROR"] == []


async def test_restart_keeps_url_and_log() -> None:
    server = JetstreamServer([track(ALICE, 1)])
    await server.start()
    url = server.url
    await server.stop()
    with pytest.raises(ConnectionRefusedError):
        await connect(url)
    await server.start()
    try:
        async with connect(query(server.url, cursor="0")) as ws:
            assert [event["time_us"] for event in await take_json(ws, 1)] == [1]
    finally:
        await server.stop()
    assert server.url == url


async def test_unknown_path_is_404(jetstream: JetstreamServer) -> None:
    with pytest.raises(InvalidStatus) as caught:
        async with connect(jetstream.url.replace("/subscribe", "/xrpc/network.bsky.jetstream.subscribeEvents")):
            pass
    assert caught.value.response.status_code == 404
    assert jetstream.connections == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"cursor": "soon"}, b"invalid cursor: soon\n"),
        ({"wantedCollections": "app.relay"}, b"invalid collection: app.relay\n"),
        ({"wantedCollections": "app.*.track"}, b"invalid collection: app.*.track\n"),
        ({"wantedCollections": [f"app.relay.c{i}" for i in range(101)]}, b"too many wantedCollections: 101 > 100\n"),
        ({"wantedDids": "alice"}, b"invalid did: alice\n"),
    ],
)
async def test_bad_query_is_400(jetstream: JetstreamServer, params: dict[str, Any], message: bytes) -> None:
    with pytest.raises(InvalidStatus) as caught:
        async with connect(query(jetstream.url, **params)):
            pass
    assert (caught.value.response.status_code, caught.value.response.body) == (400, message)
    assert [log.status for log in jetstream.connections] == [400]


async def test_refuse_plan_answers_503_then_next_connection_is_normal(jetstream: JetstreamServer) -> None:
    jetstream.append(track(ALICE, 100))
    jetstream.plan(refuse=503)
    with pytest.raises(InvalidStatus) as caught:
        async with connect(query(jetstream.url, cursor="50")):
            pass
    assert caught.value.response.status_code == 503
    async with connect(query(jetstream.url, cursor="60")) as ws:
        assert [event["time_us"] for event in await take_json(ws, 1)] == [100]
    assert [(log.status, log.cursor) for log in jetstream.connections] == [(503, 50), (101, 60)]


async def test_drop_after_closes_tcp_without_close_frame(jetstream: JetstreamServer) -> None:
    jetstream.append([track(ALICE, t) for t in (1, 2, 3, 4)])
    jetstream.plan(drop_after=2)
    async with connect(query(jetstream.url, cursor="0")) as ws:
        assert [event["time_us"] for event in await take_json(ws, 2)] == [1, 2]
        with pytest.raises(ConnectionClosedError) as caught:
            await take(ws, 1)
    assert (caught.value.rcvd, caught.value.sent) == (None, None)
    assert jetstream.connections[0].sent == 2


async def test_close_after_sends_the_planned_close_code(jetstream: JetstreamServer) -> None:
    jetstream.append([track(ALICE, t) for t in (1, 2, 3)])
    jetstream.plan(close_after=1, close_code=4001, close_reason="consumer too slow")
    async with connect(query(jetstream.url, cursor="0")) as ws:
        assert len(await take(ws, 1)) == 1
        with pytest.raises(ConnectionClosedError) as caught:
            await take(ws, 1)
    assert (caught.value.rcvd.code, caught.value.rcvd.reason) == (4001, "consumer too slow")


async def test_close_after_zero_with_normal_code(jetstream: JetstreamServer) -> None:
    jetstream.plan(close_after=0)
    async with connect(jetstream.url) as ws:
        with pytest.raises(ConnectionClosedOK) as caught:
            await ws.recv()
    assert caught.value.rcvd.code == 1000


async def test_garbage_frames_go_out_at_their_position(jetstream: JetstreamServer) -> None:
    jetstream.append([track(ALICE, 1), track(ALICE, 2)])
    jetstream.plan(garbage=[b"\x00\xff", "not json", '{"kind":'], at=1)
    async with connect(query(jetstream.url, cursor="0")) as ws:
        messages = await take(ws, 5)
    assert messages[1:4] == [b"\x00\xff", "not json", '{"kind":']
    assert [orjson.loads(messages[i])["time_us"] for i in (0, 4)] == [1, 2]
    assert jetstream.connections[0].sent == 2


async def test_stall_stops_answering_pings_until_the_client_gives_up(jetstream: JetstreamServer) -> None:
    jetstream.append([track(ALICE, 1), track(ALICE, 2)])
    jetstream.plan(stall_after=1)
    url = query(jetstream.url, cursor="0")
    async with connect(url, ping_interval=0.05, ping_timeout=0.1, close_timeout=0.1) as ws:
        assert len(await take(ws, 1)) == 1
        with pytest.raises(ConnectionClosedError) as caught:
            await take(ws, 1)
    assert (caught.value.sent.code, caught.value.sent.reason) == (1011, "keepalive ping timeout")
    assert caught.value.rcvd is None
    assert jetstream.connections[0].sent == 1


async def test_quiet_sends_nothing_but_still_answers_pings(jetstream: JetstreamServer) -> None:
    jetstream.append(track(ALICE, 1))
    jetstream.plan(quiet_after=1)
    async with connect(query(jetstream.url, cursor="0")) as ws:
        assert len(await take(ws, 1)) == 1
        jetstream.append(track(ALICE, 2))
        async with asyncio.timeout(5):
            await (await ws.ping())
    assert jetstream.connections[0].sent == 1


async def test_plans_are_used_one_per_connection_in_order(jetstream: JetstreamServer) -> None:
    jetstream.append([track(ALICE, t) for t in (1, 2, 3)])
    jetstream.plan(drop_after=1)
    jetstream.plan(close_after=2, close_code=4000)
    outcomes = []
    for cursor in ("0", "1", "2"):
        async with connect(query(jetstream.url, cursor=cursor)) as ws:
            outcomes.append([event["time_us"] for event in await take_json(ws, 1 if cursor == "0" else 2)])
    assert outcomes == [[1], [1, 2], [2, 3]]
    assert [log.plan.action for log in jetstream.connections] == ["drop", "close", None]


def test_a_plan_has_one_ending() -> None:
    with pytest.raises(ValueError, match=r"one ending per connection, got \['drop', 'stall'\]"):
        JetstreamServer().plan(drop_after=1, stall_after=2)


async def test_server_ping_interval_pings_the_client() -> None:
    async with JetstreamServer(ping_interval=0.05) as server, connect(server.url) as ws:
        pinged = asyncio.Event()
        original = ws.process_event

        def spy(event: Frame) -> None:  # websockets answers pings itself; watch frames go by
            if event.opcode is Opcode.PING:
                pinged.set()
            original(event)

        ws.process_event = spy  # type: ignore[method-assign]
        async with asyncio.timeout(5):
            await pinged.wait()


def test_commit_shapes_match_the_v1_wire() -> None:
    record = track_record(title="Song", artist="Band", audio_url=f"{AUDIO}a.mp3", album="LP", duration=200)
    create = commit(ALICE, "3mbd3542krvoy", "3mbd3542krvoy", "create", record, time_us=10)
    delete = commit(ALICE, "3mbd3542krvoy", "3mbd3542krvoz", "delete", time_us=11)
    assert create["commit"]["cid"].startswith("bafyrei") and len(create["commit"]["cid"]) == 59
    assert delete == {
        "did": ALICE,
        "time_us": 11,
        "kind": "commit",
        "commit": {
            "rev": "3mbd3542krvoz",
            "operation": "delete",
            "collection": TRACK_COLLECTION,
            "rkey": "3mbd3542krvoy",
        },
    }
    parsed = wire.parse(orjson.dumps(create))
    assert (parsed.uri, parsed.record["album"], parsed.record["duration"]) == (
        f"at://{ALICE}/{TRACK_COLLECTION}/3mbd3542krvoy",
        "LP",
        200,
    )
    assert wire.parse(orjson.dumps(identity(ALICE, time_us=5, seq=7))) == wire.Identity(ALICE, 5, 7, None)
    assert wire.parse(orjson.dumps(account(ALICE, False, "deleted", seq=8, time_us=6))) == wire.Account(
        ALICE, 6, 8, False, "deleted", 0  # `time` is ISO 8601 with milliseconds: 6 µs is 0 ms
    )


def test_synthetic_events_are_deterministic_and_consistent() -> None:
    made = list(synthetic_track_events(3000, audio_base_url=AUDIO, accounts=50, seed=7))
    assert made == list(synthetic_track_events(3000, audio_base_url=AUDIO, accounts=50, seed=7))
    assert all(a["time_us"] < b["time_us"] for a, b in itertools.pairwise(made))
    created: dict[tuple[str, str], str] = {}
    deleted: set[tuple[str, str]] = set()
    for event in made:
        parsed = wire.parse(orjson.dumps(event))
        key = (parsed.did, parsed.rkey)
        if parsed.operation == "create":
            assert key not in created
            created[key] = parsed.rev
            assert parsed.record["audioUrl"].startswith(AUDIO)
        else:
            assert key in created and key not in deleted and parsed.rev > created[key]
            created[key] = parsed.rev
            if parsed.operation == "delete":
                deleted.add(key)
    operations = [event["commit"]["operation"] for event in made]
    assert 0.8 < operations.count("create") / len(made) < 0.9
    per_account: dict[str, int] = {}
    for event in made:
        per_account[event["did"]] = per_account.get(event["did"], 0) + 1
    uploads = sorted(per_account.values(), reverse=True)
    assert uploads[0] > 10 * uploads[len(uploads) // 2]
