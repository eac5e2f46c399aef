"""Strict DAG-CBOR decoding of repository blocks: one value, one encoding.

libipld's decoder already refuses most of what DAG-CBOR forbids (unsorted or duplicate map keys,
indefinite lengths, tags other than 42, trailing bytes), but it reads non-minimal integers and floats
without complaint. Re-encoding the value and requiring the very same bytes closes that gap: a block is
accepted only in its canonical form, so a PDS cannot hand out two byte strings for one record.

libipld 3.x decodes a link (tag 42) into the CID's raw bytes, the same Python type as a byte string, and
its encoder writes any byte string that parses as a CID back as a link. The round trip below settles the
ambiguity for the fields we read: a byte string that looks like a CID would come back as a link and fail
the comparison, so after `decode_block` a field holding a valid CID (see `cid.is_cid`) was a link on the
wire. The price: a record with a byte string that happens to start like a CID is refused as non-canonical.
"""

from __future__ import annotations

from typing import Any

import libipld

from indexer.atproto.cid import DAG_CBOR, cid_str, codec_of
from indexer.atproto.proof_errors import MalformedBlock


def decode_block(cid: bytes, data: bytes, what: str) -> Any:
    """The value of a dag-cbor block (`what` names its role in messages: "commit", "MST node"...).

    The block's bytes must already have been checked against `cid` (the CAR reader does).
    """
    if codec_of(cid) != DAG_CBOR:
        raise MalformedBlock(f"{what} {cid_str(cid)} is not dag-cbor")
    try:
        value = libipld.decode_dag_cbor(data)
        canonical = libipld.encode_dag_cbor(value)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MalformedBlock(f"{what} {cid_str(cid)} is not valid DAG-CBOR: {exc}") from None
    if canonical != data:
        raise MalformedBlock(f"{what} {cid_str(cid)} is not canonical DAG-CBOR")
    return value
