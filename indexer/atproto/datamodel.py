"""A record's JSON form (as Jetstream carries it) back into its DAG-CBOR block, to name it by CID.

A proof compares CIDs: the PDS proves the record whose CID it holds, and the event claims one. That only
proves the event's *record* if the record is what the event's CID names, and Jetstream sends the two side
by side, so a tampered body under an honest CID would otherwise be served as proven. The atproto data
model maps one to one between JSON and DAG-CBOR: `{"$link": cid}` is a link, `{"$bytes": base64}` a byte
string, and there are no floats; the canonical encoding of the converted value is the block the author
signed.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import libipld

from indexer.atproto.cid import cid_for, cid_from_str, cid_str
from indexer.errors import InvalidRecord


def record_cid(record: Any) -> str:
    """The CID of the record's DAG-CBOR block; InvalidRecord for what the data model cannot hold."""
    try:
        block = libipld.encode_dag_cbor(record if _flat(record) else _value(record))
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InvalidRecord(f"record: not in the atproto data model ({exc})") from None
    return cid_str(cid_for(block))


def _flat(record: Any) -> bool:
    """Text, integers and booleans only (a track record as apps write it): nothing to convert, no walk."""
    return isinstance(record, dict) and all(type(item) in _SCALARS for item in record.values())


_SCALARS = (str, int, bool)


def _value(value: Any) -> Any:
    if isinstance(value, dict):
        if "$link" in value and len(value) == 1:
            return _link(value["$link"])
        if "$bytes" in value and len(value) == 1:
            return _bytes(value["$bytes"])
        return {key: _value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_value(item) for item in value]
    if isinstance(value, float):
        raise InvalidRecord("record: holds a float, which the atproto data model forbids")
    return value


def _link(text: Any) -> bytes:
    if not isinstance(text, str):
        raise InvalidRecord("record: a $link is not a string")
    try:
        return cid_from_str(text)
    except ValueError as exc:
        raise InvalidRecord(f"record: a $link is not a CID: {exc}") from None


def _bytes(text: Any) -> bytes:
    if not isinstance(text, str):
        raise InvalidRecord("record: a $bytes is not a string")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRecord("record: a $bytes is not base64") from None
