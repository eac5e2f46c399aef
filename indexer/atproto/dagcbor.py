"""Strict DAG-CBOR decoding of repository blocks: one value, one encoding.

libipld's decoder already refuses most of what DAG-CBOR forbids (unsorted or duplicate map keys,
indefinite lengths, tags other than 42, trailing bytes), but it reads non-minimal integers and floats
without complaint. Re-encoding the value and requiring the very same bytes closes that gap: a block is
accepted only in its canonical form, so a PDS cannot hand out two byte strings for one record.

libipld 3.x decodes a link (tag 42) into the CID's raw bytes, the same Python type as a byte string, and
its encoder writes any byte string that parses as a CID back as a link. The round trip below settles the
ambiguity for the fields we read: a byte string that looks like a CID would come back as a link and fail
the comparison, so after `decode_block` a field holding a valid CID (see `cid.is_cid`) was a link on the
wire. The price: a record with a byte string that happens to start like a CID is refused as non-canonical,
except in the fields a caller names as byte strings (`bytes_fields`): a commit's 64-byte `sig` is random, and
about one in a thousand parses as a CID; there the comparison is made with the field's bytes swapped for
zeros (which never parse as a CID) on both sides.
"""

from __future__ import annotations

from typing import Any

import libipld

from indexer.atproto.cid import DAG_CBOR, cid_str, codec_of
from indexer.atproto.proof_errors import MalformedBlock


def decode_block(cid: bytes, data: bytes, what: str, bytes_fields: tuple[str, ...] = ()) -> Any:
    """The value of a dag-cbor block (`what` names its role in messages: "commit", "MST node"...).

    The block's bytes must already have been checked against `cid` (the CAR reader does). `bytes_fields`:
    top-level fields of a map that must be byte strings, never links (see the module's docstring).
    """
    if codec_of(cid) != DAG_CBOR:
        raise MalformedBlock(f"{what} {cid_str(cid)} is not dag-cbor")
    try:
        value = libipld.decode_dag_cbor(data)
        canonical = libipld.encode_dag_cbor(value)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MalformedBlock(f"{what} {cid_str(cid)} is not valid DAG-CBOR: {exc}") from None
    if canonical != data and not _canonical_with_bytes(value, data, bytes_fields):
        raise MalformedBlock(f"{what} {cid_str(cid)} is not canonical DAG-CBOR")
    return value


def _canonical_with_bytes(value: Any, data: bytes, fields: tuple[str, ...]) -> bool:
    """`data` is canonical once the named byte strings (written as byte strings) are swapped for zeros."""
    if not fields or not isinstance(value, dict):
        return False
    swapped, probe = dict(value), data
    for name in fields:
        raw = value.get(name)
        if not isinstance(raw, bytes):
            continue
        header = _bytes_header(len(raw))
        zeros = bytes(len(raw))
        if header + raw not in probe:
            return False  # not written as a byte string (a link, say)
        probe = probe.replace(header + raw, header + zeros, 1)
        swapped[name] = zeros
    try:
        return bool(libipld.encode_dag_cbor(swapped) == probe)
    except (ValueError, TypeError, OverflowError, RecursionError):
        return False


def _bytes_header(size: int) -> bytes:
    """The CBOR head of a byte string of `size` bytes (major type 2), in its shortest form."""
    if size < 24:
        return bytes([0x40 + size])
    for code, width in ((0x58, 1), (0x59, 2), (0x5A, 4)):
        if size < 1 << (8 * width):
            return bytes([code]) + size.to_bytes(width, "big")
    return b"\x5b" + size.to_bytes(8, "big")
