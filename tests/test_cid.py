"""CIDs: only CIDv1 / sha-256 / dag-cbor or raw is accepted, and every refusal says which field is wrong."""

import base64
import hashlib

import libipld
import pytest

from indexer.atproto.cid import (
    DAG_CBOR,
    RAW,
    VarintTruncated,
    cid_for,
    cid_from_str,
    cid_problem,
    cid_str,
    codec_of,
    is_cid,
    read_varint,
)

DIGEST = hashlib.sha256(b"relay").digest()


def test_cid_for_matches_libipld_and_the_multibase_form() -> None:
    data = libipld.encode_dag_cbor({"hello": "world"})
    cid = cid_for(data)
    assert cid == bytes((1, 0x71, 0x12, 0x20)) + hashlib.sha256(data).digest()
    assert cid_str(cid) == "b" + base64.b32encode(cid).decode().lower().rstrip("=") == libipld.encode_cid(cid)
    assert cid_str(b"\x01\x02") == "baeba"  # not a CID: still shown, for messages
    assert cid_str(cid).startswith("bafyrei")
    assert cid_str(cid_for(b"", RAW)).startswith("bafkrei")
    assert cid_from_str(cid_str(cid)) == cid
    assert (codec_of(cid), codec_of(cid_for(b"x", RAW))) == (DAG_CBOR, RAW)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (bytes((0x12, 0x20)) + DIGEST, "CIDv0 is not accepted"),
        (bytes((2, 0x71, 0x12, 0x20)) + DIGEST, "CID version 2 is not accepted"),
        (bytes((1, 0x70, 0x12, 0x20)) + DIGEST, "CID codec 0x70 is not accepted (dag-cbor or raw)"),
        (bytes((1, 0x71, 0x13, 0x40)) + DIGEST * 2, "CID multihash 0x13 is not sha-256"),
        (bytes((1, 0x71, 0x12, 0x14)) + DIGEST[:20], "CID sha-256 digest is 20 bytes, not 32"),
        (bytes((1, 0x71, 0x12, 0x20)) + DIGEST[:31], "CID is truncated"),
        (bytes((1, 0x71, 0x12, 0x20)) + DIGEST + b"xy", "CID has 2 bytes too many"),
        (bytes((1, 0xF1)), "CID is malformed: varint is truncated"),
        (bytes((1, 0xF1, 0x00, 0x12)), "CID is malformed: varint is not minimally encoded"),
        (b"", "CID is malformed: varint is truncated"),
    ],
)
def test_cid_problem_names_the_field(raw: bytes, problem: str) -> None:
    assert codec_of(raw) is None and not is_cid(raw)
    assert cid_problem(raw) == problem


def test_is_cid_checks_type_and_codec() -> None:
    cid = cid_for(b"x")
    assert is_cid(cid) and is_cid(cid, DAG_CBOR) and not is_cid(cid, RAW)
    assert not is_cid(cid_str(cid)) and not is_cid(None)


@pytest.mark.parametrize(
    ("data", "value", "end"),
    [(b"\x00", 0, 1), (b"\x7f", 127, 1), (b"\x80\x01", 128, 2), (b"\xac\x02rest", 300, 2), (b"\xff" * 8 + b"\x7f", 2**63 - 1, 9)],
)
def test_read_varint(data: bytes, value: int, end: int) -> None:
    assert read_varint(data, 0) == (value, end)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80", "varint is truncated"),
        (b"", "varint is truncated"),
        (b"\x80\x00", "varint is not minimally encoded"),
        (b"\xff" * 9 + b"\x01", "varint is longer than 9 bytes"),
    ],
)
def test_read_varint_refuses(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        read_varint(data, 0)
    assert str(caught.value) == reason
    assert isinstance(caught.value, VarintTruncated) == (reason == "varint is truncated")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Qmabc", "'Qmabc' is not a base32 CID"),
        ("BAFYREI", "'BAFYREI' is not a base32 CID"),
        ("bafy!", "'bafy!' is not a base32 CID"),
        ("b18", "'b18' is not a base32 CID"),
        (cid_str(bytes((1, 0x70, 0x12, 0x20)) + DIGEST), f"{cid_str(bytes((1, 0x70, 0x12, 0x20)) + DIGEST)!r}: CID codec 0x70 is not accepted (dag-cbor or raw)"),
    ],
)
def test_cid_from_str_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        cid_from_str(text)
    assert str(caught.value) == reason


def test_cid_from_str_refuses_stray_padding_bits() -> None:
    text = cid_str(cid_for(b"x"))
    # The last base32 digit carries 3 data bits and 2 padding bits; set a padding bit.
    last = "abcdefghijklmnopqrstuvwxyz234567".index(text[-1])
    twin = text[:-1] + "abcdefghijklmnopqrstuvwxyz234567"[last | 1]
    assert twin != text
    with pytest.raises(ValueError) as caught:
        cid_from_str(twin)
    assert str(caught.value) == f"{twin!r} is not a canonical base32 CID"
