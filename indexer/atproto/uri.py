"""AT-URIs of records: built and read in one place, with one set of rules.

Only record URIs (`at://<authority>/<collection>/<rkey>`) are used here. The authority is a DID or a
handle; what a caller accepts beyond the syntax (a collection, a TID key) is its own rule.
"""

from __future__ import annotations

from typing import NamedTuple

from indexer.atproto.nsid import TRACK_COLLECTION
from indexer.atproto.syntax import is_did, is_handle, is_record_key


class RecordUri(NamedTuple):
    authority: str
    collection: str
    rkey: str

    def __str__(self) -> str:
        return f"at://{self.authority}/{self.collection}/{self.rkey}"


def record_uri(did: str, rkey: str, collection: str = TRACK_COLLECTION) -> str:
    return f"at://{did}/{collection}/{rkey}"


def parse_record_uri(uri: str) -> RecordUri | None:
    """The parts of a record's AT-URI, or None when `uri` is not one."""
    if not uri.startswith("at://"):
        return None
    parts = uri[5:].split("/")
    if len(parts) != 3:
        return None
    authority, collection, rkey = parts
    if not (is_did(authority) or is_handle(authority)) or not collection or not is_record_key(rkey):
        return None
    return RecordUri(authority, collection, rkey)
