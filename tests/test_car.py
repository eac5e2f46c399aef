"""The CAR reader checks every block's hash, reads streams within a byte cap, and names what is wrong."""

from collections.abc import AsyncIterator

import libipld
import pytest

from indexer.atproto.car import MAX_HEADER_BYTES, Car, CarReader, read_car
from indexer.atproto.cid import cid_str
from indexer.atproto.dagcbor import decode_block
from indexer.atproto.proof_errors import HashMismatch, MalformedBlock, MalformedCar
from tests.repo_builders import block, car, cid_of, varint

RECORD = {"$type": "app.relay.track", "title": "Loopback Blues", "duration": 3}
RECORD_CID, RECORD_DATA = block(RECORD)
OTHER_CID, OTHER_DATA = block({"n": 1})
RAW_CID, RAW_DATA = cid_of(b"raw bytes", 0x55), b"raw bytes"
GOOD = car([RECORD_CID], [(RECORD_CID, RECORD_DATA), (OTHER_CID, OTHER_DATA), (RAW_CID, RAW_DATA)])


def test_reads_roots_and_blocks() -> None:
    parsed = Car.from_bytes(GOOD, max_bytes=len(GOOD))
    assert parsed.roots == (RECORD_CID,)
    assert parsed.blocks == {RECORD_CID: RECORD_DATA, OTHER_CID: OTHER_DATA, RAW_CID: RAW_DATA}
    assert parsed.size == len(GOOD)


def test_duplicate_blocks_are_kept_once() -> None:
    data = car([RECORD_CID], [(RECORD_CID, RECORD_DATA), (RECORD_CID, RECORD_DATA)])
    assert Car.from_bytes(data, max_bytes=10_000).blocks == {RECORD_CID: RECORD_DATA}


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 100_000])
def test_any_chunking_reads_the_same(chunk: int) -> None:
    reader = CarReader(max_bytes=len(GOOD))
    seen = []
    for start in range(0, len(GOOD), chunk):
        seen += reader.feed(GOOD[start : start + chunk])
        if start == 0 and chunk < 10:
            assert reader.roots is None
    assert reader.roots == (RECORD_CID,)
    assert seen == [(RECORD_CID, RECORD_DATA), (OTHER_CID, OTHER_DATA), (RAW_CID, RAW_DATA)]
    assert reader.finish() == Car.from_bytes(GOOD, max_bytes=len(GOOD))


def test_a_flipped_byte_is_a_hash_mismatch_naming_the_block() -> None:
    position = GOOD.index(RECORD_DATA) + 10
    tampered = GOOD[:position] + bytes([GOOD[position] ^ 0x01]) + GOOD[position + 1 :]
    with pytest.raises(HashMismatch) as caught:
        Car.from_bytes(tampered, max_bytes=10_000)
    assert caught.value.reason == f"block {cid_str(RECORD_CID)} does not match its hash"


def test_a_block_under_another_blocks_cid_is_a_hash_mismatch() -> None:
    with pytest.raises(HashMismatch) as caught:
        Car.from_bytes(car([RECORD_CID], [(RECORD_CID, OTHER_DATA)]), max_bytes=10_000)
    assert caught.value.reason == f"block {cid_str(RECORD_CID)} does not match its hash"


DIGEST = RECORD_CID[4:]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "CAR is empty"),
        (GOOD[:3], "CAR ends inside its header"),
        (GOOD[:-5], "CAR ends inside block 3"),
        (GOOD + b"garbage", "CAR ends inside block 4"),  # 'g' reads as a 103-byte section
        (GOOD + b"\x00", "block 4 is empty"),
        (GOOD + b"\x80\x00", "block 4 length: varint is not minimally encoded"),
        (b"\x00", "header is empty"),
        (varint(MAX_HEADER_BYTES + 1), f"header is {MAX_HEADER_BYTES + 1} bytes, more than {MAX_HEADER_BYTES}"),
        (car([], [], header=b"\x01\x02"), "header is not DAG-CBOR: Failed to decode DAG-CBOR. Invalid DAG-CBOR: contains multiple objects (CBOR sequence)"),
        (car([], [], header=libipld.encode_dag_cbor([1])), "header is not a CAR v1 header {roots, version}"),
        (car([], [], header=libipld.encode_dag_cbor({"version": 2})), "CAR v2 is not supported"),
        (car([], [], header=libipld.encode_dag_cbor({"roots": [RECORD_CID], "version": 2})), "CAR version 2 is not supported"),
        (car([], [], header=libipld.encode_dag_cbor({"roots": [RECORD_CID], "version": "1"})), "CAR version '1' is not supported"),
        (car([], [], header=libipld.encode_dag_cbor({"roots": [RECORD_CID], "version": True})), "CAR version True is not supported"),
        (car([], [], header=libipld.encode_dag_cbor({"roots": [], "version": 1})), "header names no roots"),
        (car([], [], header=libipld.encode_dag_cbor({"roots": [1], "version": 1})), "header root: not a CID"),
        (car([], [], header=libipld.encode_dag_cbor({"roots": [bytes((0x12, 0x20)) + DIGEST], "version": 1})), "header root: CIDv0 is not accepted"),
        (car([], [], header=libipld.encode_dag_cbor({"roots": [RECORD_CID], "version": 1, "x": 0})), "header is not a CAR v1 header {roots, version}"),
        # {roots: [cid], version: 1} with the 1 written as a two-byte integer: decodes, but not canonical.
        (car([], [], header=libipld.encode_dag_cbor({"roots": [RECORD_CID], "version": 1})[:-1] + b"\x18\x01"), "header is not canonical DAG-CBOR"),
        (car([RECORD_CID], [(bytes((0x12, 0x20)) + DIGEST, RECORD_DATA)]), "block 1: CIDv0 is not accepted"),
        (car([RECORD_CID], [(bytes((1, 0x70, 0x12, 0x20)) + DIGEST, RECORD_DATA)]), "block 1: CID codec 0x70 is not accepted (dag-cbor or raw)"),
        (car([RECORD_CID], [(bytes((1, 0x71, 0x13, 0x20)) + DIGEST, RECORD_DATA)]), "block 1: CID multihash 0x13 is not sha-256"),
        (car([RECORD_CID], [(bytes((1, 0x71, 0x12, 0x20)) + DIGEST[:20], b"")]), "block 1: CID is truncated"),
    ],
)
def test_malformed_cars_are_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedCar) as caught:
        Car.from_bytes(data, max_bytes=100_000)
    assert caught.value.reason == reason


def test_a_car_over_the_cap_is_refused() -> None:
    with pytest.raises(MalformedCar) as caught:
        Car.from_bytes(GOOD, max_bytes=len(GOOD) - 1)
    assert caught.value.reason == f"CAR is larger than {len(GOOD) - 1} bytes"


async def _chunks(data: bytes, size: int, sent: list[int]) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        sent.append(start)
        yield data[start : start + size]


async def test_read_car_streams_within_the_cap() -> None:
    sent: list[int] = []
    parsed = await read_car(_chunks(GOOD, 5, sent), max_bytes=len(GOOD))
    assert parsed == Car.from_bytes(GOOD, max_bytes=len(GOOD))
    assert len(sent) == -(-len(GOOD) // 5)


async def test_a_stream_crossing_the_cap_stops_at_the_chunk_that_crosses_it() -> None:
    sent: list[int] = []
    body = GOOD + car([], [(OTHER_CID, OTHER_DATA)] * 1000)[len(car([], [])) :]
    with pytest.raises(MalformedCar) as caught:
        await read_car(_chunks(body, 100, sent), max_bytes=1000)
    assert caught.value.reason == "CAR is larger than 1000 bytes"
    assert sent[-1] < 1000  # nothing past the cap was asked for


async def test_a_section_declaring_more_than_the_cap_is_refused_before_its_bytes_arrive() -> None:
    head = GOOD[: len(GOOD) - len(RECORD_DATA) - len(OTHER_DATA) - len(RAW_DATA) - 3 * 37]
    sent: list[int] = []
    body = head + varint(1 << 30) + RECORD_CID + b"x" * 4096
    with pytest.raises(MalformedCar) as caught:
        await read_car(_chunks(body, len(head) + 8, sent), max_bytes=64 * 1024)
    assert caught.value.reason == "CAR is larger than 65536 bytes"
    assert sent == [0]


def test_decode_block_returns_the_value() -> None:
    assert decode_block(RECORD_CID, RECORD_DATA, "record") == RECORD


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        # {"n": 1} with the 1 written as a two-byte integer
        (b"\xa1\x61n\x18\x01", "record {cid} is not canonical DAG-CBOR"),
        (b"\xa2\x61b\x01\x61a\x02", "record {cid} is not valid DAG-CBOR: Failed to decode DAG-CBOR. Map keys must be sorted and unique"),
        (b"\xfa\x3f\x80\x00\x00", "record {cid} is not canonical DAG-CBOR"),  # 1.0 as a float32 (DAG-CBOR: float64)
        (b"\x78\x01a", "record {cid} is not canonical DAG-CBOR"),  # "a" with a one-byte length field
        (b"\x98\x02\x01\x02", "record {cid} is not canonical DAG-CBOR"),  # [1, 2] with a one-byte length field
        (b"\xa1\x61v\x58\x24" + RECORD_CID, "record {cid} is not canonical DAG-CBOR"),  # a byte string that reads as a CID
    ],
)
def test_decode_block_refuses_what_is_not_canonical(data: bytes, reason: str) -> None:
    cid = cid_of(data)
    with pytest.raises(MalformedBlock) as caught:
        decode_block(cid, data, "record")
    assert caught.value.reason == reason.format(cid=cid_str(cid))


def test_decode_block_refuses_raw_blocks() -> None:
    with pytest.raises(MalformedBlock) as caught:
        decode_block(RAW_CID, RAW_DATA, "record")
    assert caught.value.reason == f"record {cid_str(RAW_CID)} is not dag-cbor"


def test_a_commit_whose_signature_parses_as_a_cid_is_still_canonical() -> None:
    """About one random 64-byte signature in a thousand parses as a CID, and libipld's encoder would write
    it back as a link: the commit's `sig` is compared as the byte string it is (seen on the reference PDS)."""
    from indexer.atproto.cid import cid_for
    from indexer.atproto.dagcbor import decode_block
    from indexer.atproto.proof_errors import MalformedBlock

    sig = bytes.fromhex("01ca3aeca25e") + bytes(range(58))
    commit = {"did": "did:plc:x", "rev": "3mmoojp7vgo22", "sig": sig, "data": RECORD_CID, "prev": None, "version": 3}
    zeros = libipld.encode_dag_cbor({**commit, "sig": bytes(64)})
    data = zeros.replace(b"\x58\x40" + bytes(64), b"\x58\x40" + sig)
    assert libipld.encode_dag_cbor(commit) != data  # libipld writes it back as a link
    cid = cid_for(data)
    assert decode_block(cid, data, "commit", bytes_fields=("sig",))["sig"] == sig
    with pytest.raises(MalformedBlock, match="not canonical"):
        decode_block(cid, data, "commit")
