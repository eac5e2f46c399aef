"""A record's JSON form back into its DAG-CBOR block: the CIDs Jetstream announces, and what the data
model cannot hold."""

import base64

import pytest

from indexer.atproto.datamodel import record_cid
from indexer.errors import InvalidRecord
from tests.repo_builders import block
from tests.servers.events import golden_events

LINK = "bafyreidk5brxcf6wqa2efgtjpr4ujvorz3bmkku3fjulnnqc3xuwr74lya"


def test_every_record_of_the_real_capture_hashes_to_the_cid_jetstream_announced() -> None:
    commits = [e["commit"] for e in golden_events() if e.get("kind") == "commit" and "record" in e["commit"]]
    assert len(commits) == 7
    assert [record_cid(c["record"]) for c in commits] == [c["cid"] for c in commits]


def test_links_and_bytes_are_encoded_as_the_block_holds_them() -> None:
    raw_link = base64.b32decode(LINK[1:].upper() + "=" * (-len(LINK[1:]) % 8))
    record = {"$type": "app.relay.track", "ref": {"$link": LINK}, "blob": {"$bytes": "AAEC"}, "n": [1, None, True]}
    expected, _ = block({"$type": "app.relay.track", "ref": raw_link, "blob": b"\x00\x01\x02", "n": [1, None, True]})
    assert record_cid(record) == "b" + base64.b32encode(expected).decode().lower().rstrip("=")


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"duration": 1.5}, "record: holds a float, which the atproto data model forbids"),
        ({"ref": {"$link": "nope"}}, "record: a $link is not a CID: 'nope' is not a base32 CID"),
        ({"ref": {"$link": 7}}, "record: a $link is not a string"),
        ({"raw": {"$bytes": "***"}}, "record: a $bytes is not base64"),
        ({"raw": {"$bytes": 7}}, "record: a $bytes is not a string"),
        ({"big": 2**64}, "record: not in the atproto data model"),
    ],
)
def test_what_the_data_model_cannot_hold_is_an_invalid_record(record: dict, reason: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        record_cid(record)
    assert caught.value.reason.startswith(reason)
