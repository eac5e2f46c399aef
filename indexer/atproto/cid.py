"""CIDs as atproto repositories use them: CIDv1, a sha-256 multihash, and the dag-cbor or raw codec.

A CID is handled as its binary form (`bytes`, 36 of them): that is what a CAR section starts with and what
libipld decodes a DAG-CBOR link into, so no conversion happens on the hot path. The string form (multibase
base32, `bafy...`) is what Jetstream events and XRPC answer, and is only made for results and messages.

Anything else (CIDv0, other hashes or codecs, truncated digests) is refused with a reason: the repository
spec allows only this "blessed" form for commits, MST nodes and (when written today) records, and a reader
that accepted more would have more ways to be fooled.
"""

from __future__ import annotations

import base64
import hashlib

import libipld

DAG_CBOR = 0x71
RAW = 0x55
SHA2_256 = 0x12
DIGEST_LENGTH = 32
CID_LENGTH = 4 + DIGEST_LENGTH

_CODEC_NAMES = {DAG_CBOR: "dag-cbor", RAW: "raw"}
# Both codecs are below 0x80, so each whole prefix is four single-byte varints.
_PREFIXES = {bytes((1, codec, SHA2_256, DIGEST_LENGTH)): codec for codec in _CODEC_NAMES}
_MAX_VARINT_BYTES = 9  # multiformats caps unsigned varints at 63 bits


def cid_for(data: bytes, codec: int = DAG_CBOR) -> bytes:
    """The CID of a block: its codec and the sha-256 of its bytes."""
    return bytes((1, codec, SHA2_256, DIGEST_LENGTH)) + hashlib.sha256(data).digest()


def codec_of(cid: bytes) -> int | None:
    """The codec of an accepted CID, or None when `cid` is not exactly one (see `cid_problem`)."""
    if len(cid) != CID_LENGTH:
        return None
    return _PREFIXES.get(cid[:4])


def is_cid(value: object, codec: int | None = None) -> bool:
    """True when `value` is an accepted binary CID (of `codec`, when given)."""
    if not isinstance(value, bytes):
        return False
    found = codec_of(value)
    return found is not None and (codec is None or found == codec)


def digest_matches(cid: bytes, data: bytes) -> bool:
    return hashlib.sha256(data).digest() == cid[4:]


def cid_problem(raw: bytes) -> str:
    """Why `raw` (a CID, or the bytes starting with one) is not an accepted CID: for error messages.

    Reads the CID's own fields so that the reason names what is wrong, not just that something is.
    """
    if len(raw) >= 2 and raw[0] == SHA2_256 and raw[1] == DIGEST_LENGTH:
        return "CIDv0 is not accepted"
    try:
        version, pos = read_varint(raw, 0)
        if version != 1:
            return f"CID version {version} is not accepted"
        codec, pos = read_varint(raw, pos)
        if codec not in _CODEC_NAMES:
            return f"CID codec 0x{codec:x} is not accepted (dag-cbor or raw)"
        hash_code, pos = read_varint(raw, pos)
        if hash_code != SHA2_256:
            return f"CID multihash 0x{hash_code:x} is not sha-256"
        length, pos = read_varint(raw, pos)
    except ValueError as exc:
        return f"CID is malformed: {exc}"
    if length != DIGEST_LENGTH:
        return f"CID sha-256 digest is {length} bytes, not {DIGEST_LENGTH}"
    if len(raw) < CID_LENGTH:
        return "CID is truncated"
    return f"CID has {len(raw) - CID_LENGTH} bytes too many"


class VarintTruncated(ValueError):
    """The data ends inside the varint: more bytes may complete it (a stream reader waits for them)."""


def read_varint(data: bytes | bytearray, pos: int) -> tuple[int, int]:
    """An unsigned LEB128 varint at `pos`: (value, position after it). Raises ValueError with the reason.

    Strict as multiformats requires: at most 9 bytes, and minimal (no padding byte of zero bits at the end),
    so that one number has one encoding.
    """
    value = 0
    for index in range(_MAX_VARINT_BYTES):
        if pos + index >= len(data):
            raise VarintTruncated("varint is truncated")
        byte = data[pos + index]
        value |= (byte & 0x7F) << (7 * index)
        if byte < 0x80:
            if byte == 0 and index > 0:
                raise ValueError("varint is not minimally encoded")
            return value, pos + index + 1
    raise ValueError(f"varint is longer than {_MAX_VARINT_BYTES} bytes")


def cid_str(cid: bytes) -> str:
    """The multibase base32 form (`bafy...` for dag-cbor): how atproto writes CIDs in JSON."""
    if codec_of(cid) is not None:
        return str(libipld.encode_cid(cid))  # the same text (tested), at a tenth of base64's pure-Python cost
    return "b" + base64.b32encode(cid).decode("ascii").lower().rstrip("=")


def cid_from_str(text: str) -> bytes:
    """The binary form of a base32 CID string; ValueError unless it is an accepted CID."""
    if not text.startswith("b") or not text[1:].isalnum() or text != text.lower():
        raise ValueError(f"{text[:80]!r} is not a base32 CID")
    body = text[1:].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except ValueError:
        raise ValueError(f"{text[:80]!r} is not a base32 CID") from None
    if codec_of(raw) is None:
        raise ValueError(f"{text[:80]!r}: {cid_problem(raw)}")
    if cid_str(raw) != text:  # stray padding bits: one CID, one spelling
        raise ValueError(f"{text[:80]!r} is not a canonical base32 CID")
    return raw
