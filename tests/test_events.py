import orjson
import pytest

from indexer.errors import MalformedEvent
from indexer.ingest.events import Account, Commit, Identity, Unknown, parse
from tests.servers.events import golden_events


def _frame(**overrides: object) -> bytes:
    event = {
        "did": "did:plc:abc",
        "time_us": 1779719009132431,
        "kind": "commit",
        "commit": {"rev": "3mmoojp7vgo2g", "operation": "delete", "collection": "app.relay.track", "rkey": "3mmoojp7etg2g"},
    }
    event.update(overrides)
    return orjson.dumps(event)


@pytest.mark.parametrize("raw", [orjson.dumps(e) for e in golden_events()])
def test_golden_events_parse(raw: bytes) -> None:
    event = parse(raw)
    source = orjson.loads(raw)
    assert event.did == source["did"] and event.time_us == source["time_us"]
    assert type(event) is {"commit": Commit, "identity": Identity, "account": Account}[source["kind"]]


def test_commit_fields() -> None:
    create = orjson.loads(orjson.dumps(golden_events()[0]))
    event = parse(orjson.dumps(create))
    assert event == Commit(
        did="did:plc:mcc5yghbk7tixqryac2yxku7",
        time_us=1779719009132431,
        rev="3mmoojp7vgo2g",
        operation="create",
        collection="app.bsky.feed.like",
        rkey="3mmoojp7etg2g",
        record=create["commit"]["record"],
        cid="bafyreidqpc7si3dbimffi64lz3xsx2qt45ip7rpna2qpslcddp23itjjzm",
    )
    assert event.uri == "at://did:plc:mcc5yghbk7tixqryac2yxku7/app.bsky.feed.like/3mmoojp7etg2g"


def test_identity_without_handle_and_inactive_account() -> None:
    assert parse(_frame(kind="identity", identity={"did": "did:plc:abc", "seq": 7, "time": "x"})) == Identity(
        "did:plc:abc", 1779719009132431, 7, None
    )
    account = {"did": "did:plc:abc", "active": False, "status": "takendown", "seq": 9, "time": "x"}
    # A `time` that cannot be read orders the event by Jetstream's own time.
    assert parse(_frame(kind="account", account=account)) == Account(
        "did:plc:abc", 1779719009132431, 9, False, "takendown", 1779719009132431
    )
    timed = {**account, "time": "2026-05-25T14:23:29.120Z"}
    assert parse(_frame(kind="account", account=timed)).at_us == 1779719009120000


def test_unknown_kind_still_has_a_time() -> None:
    assert parse(_frame(kind="sync", sync={})) == Unknown("did:plc:abc", 1779719009132431, "sync")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x00\xff\xfe garbage", "not JSON"),
        (b'{"kind":', "not JSON"),
        (b"[1, 2]", "not a JSON object: list"),
        (b'"text"', "not a JSON object: str"),
        (_frame(did=None), "did: missing or not a string"),
        (_frame(did=""), "did: missing or not a string"),
        (_frame(time_us="123"), "time_us: missing or not a non-negative integer"),
        (_frame(time_us=-1), "time_us: missing or not a non-negative integer"),
        (_frame(time_us=1.5), "time_us: missing or not a non-negative integer"),
        (_frame(kind=None), "kind: missing or not a string"),
        (_frame(commit=None), "commit: missing or not an object"),
        (_frame(commit={"rev": "r", "operation": "upsert", "collection": "c", "rkey": "k"}),
         "commit.operation: unknown 'upsert'"),
        (_frame(commit={"rev": "r", "operation": "create", "collection": "c", "rkey": "k", "cid": "x"}),
         "commit.record: missing on create"),
        (_frame(commit={"rev": "r", "operation": "update", "collection": "c", "rkey": "k", "record": {}}),
         "commit.cid: missing on update"),
        (_frame(commit={"operation": "delete", "collection": "c", "rkey": "k"}), "commit.rev: missing or not a string"),
        (_frame(commit={"rev": "r", "operation": "delete", "rkey": "k"}), "commit.collection: missing or not a string"),
        (_frame(commit={"rev": "r", "operation": "delete", "collection": "c"}), "commit.rkey: missing or not a string"),
        (_frame(kind="account", account={"did": "did:plc:abc", "seq": 1}), "account.active: missing or not a boolean"),
        (_frame(kind="identity", identity="nope"), "identity: missing or not an object"),
    ],
)
def test_malformed_frames_name_their_reason(frame: bytes, reason: str) -> None:
    with pytest.raises(MalformedEvent) as caught:
        parse(frame)
    assert caught.value.reason.startswith(reason)
