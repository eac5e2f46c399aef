"""Proofs of records from their PDS: a getRecord CAR for one record, a getRepo CAR for a whole collection.

Jetstream carries no proof: an event's record is whatever the Jetstream host says. A record counts as
proven only when the account's own repository, signed with the key of its DID document, shows it:

1. every block's bytes hash to its CID (`car.py`);
2. the CAR's first root is a commit `{did, version: 3, data, rev, prev, sig}` for this account;
3. the commit without `sig`, encoded as DAG-CBOR, verifies against the account's `#atproto` key;
4. the MST under `commit.data` leads from the root to `<collection>/<rkey>` (`mst.py`), and the value
   found there is the CID of the record block in the CAR.

A getRepo CAR is read keeping only what the walk of one collection can need (`repo_blocks`): MST nodes and
blocks that name the collection; every other block is hash-checked and let go (`car.py`).

The outcome of a getRecord proof is `Proven` (the record, its CID and the commit's rev) or `Absent` (the
signed tree shows no such key at that rev). Any failure raises a `ProofError` naming the reason. Comparing
the proven CID with an event's CID is the caller's: a differing CID, or Absent, is a record edited or
deleted since (superseded), not a forgery.

Sans-I/O: bytes or blocks in, outcome out. The caller fetches (with the caps below) and resolves the key.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, Callable, Iterator, Mapping, Set
from dataclasses import dataclass
from typing import Any

import libipld

from indexer.atproto import tid
from indexer.atproto.car import Car, read_car
from indexer.atproto.cid import DAG_CBOR, cid_str, is_cid
from indexer.atproto.dagcbor import decode_block
from indexer.atproto.keys import SigningKey
from indexer.atproto.mst import prove, walk
from indexer.atproto.nsid import TRACK_COLLECTION
from indexer.atproto.proof_errors import BadSignature, MalformedBlock, MissingBlock, ProofError, WrongRepo
from indexer.atproto.syntax import is_record_key

# A getRecord CAR is a commit, a few MST nodes and one record: about 2 KB for a track.
MAX_PROOF_BYTES = 128 * 1024
COMMIT_VERSION = 3
_COMMIT_FIELDS = frozenset({"did", "version", "data", "rev", "prev", "sig"})
# NSID: a reversed domain name (two segments or more), then a name segment of letters and digits.
_NSID = re.compile(
    r"[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+\.[a-zA-Z][a-zA-Z0-9]{0,62}"
)


@dataclass(frozen=True, slots=True)
class Commit:
    did: str
    rev: str
    data: bytes  # the MST root
    cid: bytes


@dataclass(frozen=True, slots=True)
class Proven:
    record: dict[str, Any]
    cid: str
    rev: str


@dataclass(frozen=True, slots=True)
class Absent:
    rev: str


@dataclass(frozen=True, slots=True)
class RepoRecord:
    rkey: str
    cid: str
    # None: the CAR holds the block (hash-checked) but it does not even name the collection, so it cannot be
    # a record of it; it was let go unread (see `repo_blocks`).
    record: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class VerifiedRepo:
    did: str
    rev: str
    records: tuple[RepoRecord, ...]


def verify_record(
    car: Car | bytes, *, did: str, collection: str, rkey: str, key: SigningKey, max_bytes: int = MAX_PROOF_BYTES
) -> Proven | Absent:
    """Check a `com.atproto.sync.getRecord` CAR for `did`'s `<collection>/<rkey>`."""
    path = _repo_path(collection, rkey)
    if isinstance(car, bytes):
        car = Car.from_bytes(car, max_bytes=max_bytes)
    commit = verify_commit(car, did=did, key=key)
    value = prove(car.blocks, commit.data, path)
    if value is None:
        return Absent(commit.rev)
    return Proven(_record(car.blocks, value, path), cid_str(value), commit.rev)


def verify_repo(car: Car, *, did: str, key: SigningKey, collection: str = TRACK_COLLECTION) -> VerifiedRepo:
    """Check a `com.atproto.sync.getRepo` CAR and return every record of `collection`, in key order.

    All or nothing: a broken node or a missing record anywhere in the collection raises, so a caller never
    acts on part of a repository (records gone from it are deletes, which only a whole listing shows).
    """
    commit = verify_commit(car, did=did, key=key)
    return VerifiedRepo(did, commit.rev, tuple(iter_records(car.blocks, commit, collection, car.dropped)))


async def read_and_verify_repo(
    chunks: AsyncIterable[bytes], *, did: str, key: SigningKey, max_bytes: int, collection: str = TRACK_COLLECTION
) -> VerifiedRepo:
    """`verify_repo` over a streamed getRepo body, refused as soon as it crosses `max_bytes`; only the blocks
    the walk of `collection` can need are held meanwhile."""
    car = await read_car(chunks, max_bytes=max_bytes, keep=repo_blocks(collection))
    return verify_repo(car, did=did, key=key, collection=collection)


# A canonical MST node {e, l} begins with a map of two entries whose first key is "e" (DAG-CBOR sorts keys by
# length, then bytes): `a2 61 65`.
_MST_NODE_START = b"\xa2\x61\x65"


def repo_blocks(collection: str) -> Callable[[bytes], bool]:
    """Which blocks of a getRepo CAR to hold for walking `collection`: anything shaped like an MST node, and
    anything whose bytes name the collection (a record of it must, in its `$type`). A block let go that the
    walk then meets is a record of another type under our collection: invalid, not missing."""
    name = collection.encode("ascii")
    return lambda data: data.startswith(_MST_NODE_START) or name in data


def iter_records(
    blocks: Mapping[bytes, bytes], commit: Commit, collection: str, dropped: Set[bytes] = frozenset()
) -> Iterator[RepoRecord]:
    """Each record of `collection` in the tree of a verified commit; other collections' records are never
    decoded (only the MST nodes bordering ours are read)."""
    prefix = _repo_path(collection, None)
    for path, value in walk(blocks, commit.data, prefix):
        rkey = path[len(prefix) :].decode("ascii")  # mst checked the key's characters
        record = None if value in dropped and value not in blocks else _record(blocks, value, path)
        yield RepoRecord(rkey, cid_str(value), record)


def verify_commit(car: Car, *, did: str, key: SigningKey) -> Commit:
    """The CAR's first root, checked to be `did`'s commit and signed by `key`."""
    root = car.roots[0]
    data = car.blocks.get(root)
    if data is None:
        raise MissingBlock(f"commit {cid_str(root)} is missing")
    value = decode_block(root, data, "commit", bytes_fields=("sig",))
    if not isinstance(value, dict):
        raise MalformedBlock(f"commit {cid_str(root)} is not a map")
    _check_commit_fields(value)
    if value["did"] != did:
        raise WrongRepo(f"commit is for {value['did'][:100]!r}, not {did}")
    unsigned = {name: field for name, field in value.items() if name != "sig"}
    if not key.verify(libipld.encode_dag_cbor(unsigned), value["sig"]):
        raise BadSignature(f"commit {cid_str(root)} signature does not verify against {did}'s key")
    return Commit(did, value["rev"], value["data"], root)


def _check_commit_fields(commit: dict[str, Any]) -> None:
    fields = commit.keys()
    if fields != _COMMIT_FIELDS:
        missing, extra = sorted(_COMMIT_FIELDS - fields), sorted(fields - _COMMIT_FIELDS)
        detail = f"lacks {', '.join(missing)}" if missing else f"has unexpected fields {', '.join(extra)}"
        raise MalformedBlock(f"commit {detail[:200]}")
    version = commit["version"]
    if type(version) is not int or version != COMMIT_VERSION:
        raise MalformedBlock(f"commit version {str(version)[:20]} is not {COMMIT_VERSION}")
    if not isinstance(commit["did"], str):
        raise MalformedBlock("commit did is not a string")
    if not isinstance(commit["rev"], str) or not tid.is_tid(commit["rev"]):
        raise MalformedBlock(f"commit rev {str(commit['rev'])[:40]!r} is not a TID")
    if not is_cid(commit["data"], DAG_CBOR):
        raise MalformedBlock("commit data is not a dag-cbor CID")
    if commit["prev"] is not None and not is_cid(commit["prev"], DAG_CBOR):
        raise MalformedBlock("commit prev is neither null nor a dag-cbor CID")
    if not isinstance(commit["sig"], bytes) or len(commit["sig"]) != 64:
        raise MalformedBlock("commit sig is not 64 bytes")


def _record(blocks: Mapping[bytes, bytes], cid: bytes, path: bytes) -> dict[str, Any]:
    data = blocks.get(cid)
    if data is None:
        raise MissingBlock(f"record {path.decode('ascii')} ({cid_str(cid)}) is missing")
    value = decode_block(cid, data, "record")
    if not isinstance(value, dict):
        raise MalformedBlock(f"record {cid_str(cid)} is not a map")
    return value


def _repo_path(collection: str, rkey: str | None) -> bytes:
    """`<collection>/<rkey>` as an MST key (or the collection's prefix, when `rkey` is None)."""
    if len(collection) > 317 or not _NSID.fullmatch(collection):
        raise ProofError(f"{collection[:100]!r} is not a collection NSID")
    if rkey is not None and not is_record_key(rkey):
        raise ProofError(f"{rkey[:100]!r} is not a record key")
    return f"{collection}/{rkey or ''}".encode("ascii")

