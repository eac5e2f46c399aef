"""Record and repository proofs against Bluesky's reference PDS, and every way a proof can fail.

The real CARs come from the PDS's own `com.atproto.sync.getRecord` and `getRepo`; forged ones are those
CARs with one thing changed (a byte, a key, a block), rebuilt with tests/repo_builders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import libipld
import pytest

from indexer.atproto.car import Car
from indexer.atproto.cid import cid_str
from indexer.atproto.keys import SigningKey, signing_key
from indexer.atproto.mst import walk
from indexer.atproto.proof import Absent, Proven, RepoRecord, read_and_verify_repo, verify_record, verify_repo
from indexer.atproto.proof_errors import (
    BadSignature,
    HashMismatch,
    MalformedBlock,
    MalformedCar,
    MissingBlock,
    ProofError,
    WrongRepo,
)
from tests.fixtures.pds import LocalPds, PdsAccount
from tests.repo_builders import block, build_mst, car, cid_of, commit, did_document, multikey, new_key, resign

TRACK = "app.relay.track"


def track(index: int) -> dict[str, Any]:
    return {
        "$type": TRACK,
        "title": f"Track {index}",
        "artist": "The Fixtures",
        "audioUrl": f"https://audio.example.test/{index}.mp3",
        "fileType": "mp3",
        "duration": index,
        "createdAt": "2025-10-28T22:30:00.000Z",
    }


@dataclass
class Repo:
    pds: LocalPds
    account: PdsAccount
    key: SigningKey
    tracks: dict[str, tuple[str, dict[str, Any]]]  # rkey -> (cid, record), as the repo holds them now
    replaced: tuple[str, str]  # (rkey, the CID it had before its update)
    deleted: str  # an rkey that existed once

    def xrpc(self, method: str, **params: str) -> bytes:
        response = httpx.get(f"{self.pds.pds_url}/xrpc/{method}", params=params, timeout=30)
        response.raise_for_status()
        return response.content

    def get_record(self, rkey: str, collection: str = TRACK) -> bytes:
        return self.xrpc("com.atproto.sync.getRecord", did=self.account.did, collection=collection, rkey=rkey)

    def get_repo(self) -> bytes:
        return self.xrpc("com.atproto.sync.getRepo", did=self.account.did)

    def latest_rev(self) -> str:
        response = httpx.get(
            f"{self.pds.pds_url}/xrpc/com.atproto.sync.getLatestCommit", params={"did": self.account.did}, timeout=30
        )
        return str(response.json()["rev"])

    def verify(self, data: bytes | Car, rkey: str, **overrides: Any) -> Proven | Absent:
        arguments: dict[str, Any] = {"did": self.account.did, "collection": TRACK, "rkey": rkey, "key": self.key}
        return verify_record(data, **{**arguments, **overrides})


def _write(pds: LocalPds, account: PdsAccount, method: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{pds.pds_url}/xrpc/com.atproto.repo.{method}", json={"repo": account.did, **body},
        headers=account.auth_headers, timeout=30,
    )
    response.raise_for_status()
    return dict(response.json())


@pytest.fixture(scope="module")
def repo(local_pds: LocalPds) -> Repo:
    """An account with 30 tracks (one updated, one deleted) beside posts and another collection."""
    account = local_pds.create_account("prover")
    tracks: dict[str, tuple[str, dict[str, Any]]] = {}
    for index in range(30):
        written = _write(local_pds, account, "createRecord", {"collection": TRACK, "record": track(index)})
        tracks[written["uri"].rsplit("/", 1)[1]] = (written["cid"], track(index))
        post = {"$type": "app.bsky.feed.post", "text": f"post {index}", "createdAt": "2025-10-28T22:30:00.000Z"}
        _write(local_pds, account, "createRecord", {"collection": "app.bsky.feed.post", "record": post})
        _write(local_pds, account, "createRecord", {"collection": "app.relay.zzz", "record": {"n": index}})
    rkeys = sorted(tracks)
    replaced, deleted = rkeys[3], rkeys[7]
    update = {**track(1000), "title": "Updated"}
    written = _write(local_pds, account, "putRecord", {"collection": TRACK, "rkey": replaced, "record": update})
    old_cid = tracks[replaced][0]
    tracks[replaced] = (written["cid"], update)
    _write(local_pds, account, "deleteRecord", {"collection": TRACK, "rkey": deleted})
    del tracks[deleted]
    document = httpx.get(f"{local_pds.plc_url}/{account.did}", timeout=10).json()
    return Repo(local_pds, account, signing_key(document, account.did), tracks, (replaced, old_cid), deleted)


def rebuild(data: bytes, *, drop: bytes | None = None, swap: dict[bytes, tuple[bytes, bytes]] | None = None) -> bytes:
    """The CAR again, without block `drop`, with blocks replaced per `swap` (old CID -> new CID and bytes)."""
    parsed = Car.from_bytes(data, max_bytes=10_000_000)
    swap = swap or {}
    roots = [swap.get(root, (root, b""))[0] for root in parsed.roots]
    blocks = [swap.get(cid, (cid, block_data)) for cid, block_data in parsed.blocks.items() if cid != drop]
    return car(roots, blocks)


slow = pytest.mark.slow


@slow
def test_every_track_proves_with_its_record_cid_and_rev(repo: Repo) -> None:
    rev = repo.latest_rev()
    for rkey, (cid, record) in repo.tracks.items():
        assert repo.verify(repo.get_record(rkey), rkey) == Proven(record, cid, rev)


@slow
def test_an_updated_record_proves_its_new_cid_and_the_caller_sees_the_old_one_superseded(repo: Repo) -> None:
    rkey, old_cid = repo.replaced
    outcome = repo.verify(repo.get_record(rkey), rkey)
    assert isinstance(outcome, Proven)
    assert outcome.cid == repo.tracks[rkey][0] != old_cid
    assert outcome.record["title"] == "Updated"


@slow
@pytest.mark.parametrize("which", ["deleted", "never"])
def test_a_record_the_repo_does_not_hold_is_proven_absent(repo: Repo, which: str) -> None:
    rkey = repo.deleted if which == "deleted" else "3zzzzzzzzzzz2"
    assert repo.verify(repo.get_record(rkey), rkey) == Absent(repo.latest_rev())


@slow
def test_a_flipped_byte_in_the_record_is_a_hash_mismatch_naming_it(repo: Repo) -> None:
    rkey, (cid, _) = next(iter(repo.tracks.items()))
    data = repo.get_record(rkey)
    position = data.index(b"The Fixtures")
    tampered = data[:position] + b"the" + data[position + 3 :]
    with pytest.raises(HashMismatch) as caught:
        repo.verify(tampered, rkey)
    assert caught.value.reason == f"block {cid} does not match its hash"


@slow
def test_a_commit_signed_with_another_key_is_a_bad_signature(repo: Repo) -> None:
    rkey = next(iter(repo.tracks))
    data = repo.get_record(rkey)
    parsed = Car.from_bytes(data, max_bytes=100_000)
    root = parsed.roots[0]
    new_root, new_commit = resign(parsed.blocks[root], new_key())
    with pytest.raises(BadSignature) as caught:
        repo.verify(rebuild(data, swap={root: (new_root, new_commit)}), rkey)
    assert caught.value.reason == f"commit {cid_str(new_root)} signature does not verify against {repo.account.did}'s key"
    # And the genuine CAR against a key that is not the account's:
    stranger = signing_key(did_document(repo.account.did, {"type": "Multikey", "publicKeyMultibase": multikey(new_key())}))
    with pytest.raises(BadSignature) as caught:
        repo.verify(data, rkey, key=stranger)
    assert caught.value.reason == f"commit {cid_str(root)} signature does not verify against {repo.account.did}'s key"


@slow
def test_a_commit_of_another_account_is_the_wrong_repo(repo: Repo) -> None:
    rkey = next(iter(repo.tracks))
    with pytest.raises(WrongRepo) as caught:
        repo.verify(repo.get_record(rkey), rkey, did="did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
    assert caught.value.reason == f"commit is for {repo.account.did!r}, not did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"


@slow
def test_missing_blocks_make_an_incomplete_proof(repo: Repo) -> None:
    rkey, (cid, _) = next(iter(repo.tracks.items()))
    data = repo.get_record(rkey)
    parsed = Car.from_bytes(data, max_bytes=100_000)
    root = parsed.roots[0]
    mst_root = libipld.decode_dag_cbor(parsed.blocks[root])["data"]
    cases = {
        root: f"commit {cid_str(root)} is missing",
        mst_root: f"MST node {cid_str(mst_root)} is missing",
        cid_of(libipld.encode_dag_cbor(repo.tracks[rkey][1])): f"record {TRACK}/{rkey} ({cid}) is missing",
    }
    for drop, reason in cases.items():
        with pytest.raises(MissingBlock) as caught:
            repo.verify(rebuild(data, drop=drop), rkey)
        assert caught.value.reason == reason


@slow
def test_a_proof_of_another_record_does_not_prove_this_one(repo: Repo) -> None:
    first, second = sorted(repo.tracks)[:2]
    with pytest.raises(MissingBlock) as caught:
        repo.verify(repo.get_record(first), second)
    # Found on the path the CAR carries (then its record block is missing), or off it.
    record_missing = f"record {TRACK}/{second} ({repo.tracks[second][0]}) is missing"
    assert caught.value.reason == record_missing or re.fullmatch(r"MST node bafyrei[a-z2-7]+ is missing", caught.value.reason)


@slow
def test_malformed_cars_from_the_real_proof(repo: Repo) -> None:
    rkey = next(iter(repo.tracks))
    data = repo.get_record(rkey)
    blocks = len(Car.from_bytes(data, max_bytes=100_000).blocks)
    cases = [
        (data + b"garbage", f"CAR ends inside block {blocks + 1}"),
        (data + b"\x01\x02garbage", f"block {blocks + 1}: CID version 2 is not accepted"),
        (data[:-1], f"CAR ends inside block {blocks}"),
        (b"\x0a" + data[1:], "header is not DAG-CBOR: Failed to decode DAG-CBOR. end of data"),  # a cut header
        (data[1:], "header is 12962 bytes, more than 4096"),  # the header map read as its length: a2 65
    ]
    for tampered, reason in cases:
        with pytest.raises(MalformedCar) as caught:
            repo.verify(tampered, rkey)
        assert caught.value.reason == reason
    with pytest.raises(MalformedCar) as caught:
        repo.verify(data, rkey, max_bytes=len(data) - 1)
    assert caught.value.reason == f"CAR is larger than {len(data) - 1} bytes"


@slow
def test_the_full_repo_yields_every_track_in_key_order_and_nothing_else(repo: Repo) -> None:
    verified = verify_repo(Car.from_bytes(repo.get_repo(), max_bytes=10_000_000), did=repo.account.did, key=repo.key)
    expected = tuple(RepoRecord(rkey, cid, record) for rkey, (cid, record) in sorted(repo.tracks.items()))
    assert verified.records == expected
    assert (verified.did, verified.rev) == (repo.account.did, repo.latest_rev())


@slow
def test_our_canonical_tree_is_the_one_the_pds_signed(repo: Repo) -> None:
    parsed = Car.from_bytes(repo.get_repo(), max_bytes=10_000_000)
    data = libipld.decode_dag_cbor(parsed.blocks[parsed.roots[0]])["data"]
    everything = dict(walk(parsed.blocks, data, b""))
    assert len(everything) == len(repo.tracks) + 60
    assert build_mst(everything)[0] == data


@slow
async def test_the_repo_streams_through_the_byte_cap(repo: Repo) -> None:
    url = f"{repo.pds.pds_url}/xrpc/com.atproto.sync.getRepo"
    async with httpx.AsyncClient(timeout=30) as client:
        async with client.stream("GET", url, params={"did": repo.account.did}) as response:
            verified = await read_and_verify_repo(
                response.aiter_bytes(), did=repo.account.did, key=repo.key, max_bytes=1_000_000
            )
        assert len(verified.records) == len(repo.tracks)
        async with client.stream("GET", url, params={"did": repo.account.did}) as response:
            with pytest.raises(MalformedCar) as caught:
                await read_and_verify_repo(response.aiter_bytes(), did=repo.account.did, key=repo.key, max_bytes=2048)
        assert caught.value.reason == "CAR is larger than 2048 bytes"


@slow
def test_the_repo_walk_needs_no_record_of_other_collections_but_every_track(repo: Repo) -> None:
    data = repo.get_repo()
    parsed = Car.from_bytes(data, max_bytes=10_000_000)
    posts = [cid for cid, block_data in parsed.blocks.items() if record_type(block_data) == "app.bsky.feed.post"]
    others = [cid for cid, block_data in parsed.blocks.items() if record_type(block_data) == "app.relay.zzz"]
    assert len(posts) == 30 and len(others) == 30
    without = {cid: block_data for cid, block_data in parsed.blocks.items() if cid not in {*posts, *others}}
    pruned = Car(parsed.roots, without, parsed.size)
    assert len(verify_repo(pruned, did=repo.account.did, key=repo.key).records) == len(repo.tracks)
    rkey, (cid, _) = sorted(repo.tracks.items())[-1]
    missing = {c: d for c, d in parsed.blocks.items() if cid_str(c) != cid}
    with pytest.raises(MissingBlock) as caught:
        verify_repo(Car(parsed.roots, missing, parsed.size), did=repo.account.did, key=repo.key)
    assert caught.value.reason == f"record {TRACK}/{rkey} ({cid}) is missing"


def record_type(data: bytes) -> str | None:
    """A block's `$type` when it is a record (MST nodes and commits have none): by decoding it, not by
    looking for bytes that a CID or a signature may hold by chance."""
    value = libipld.decode_dag_cbor(data)
    return value.get("$type") if isinstance(value, dict) else None


@slow
def test_a_flipped_byte_anywhere_in_the_repo_is_a_hash_mismatch(repo: Repo) -> None:
    data = repo.get_repo()
    position = data.index(b"post 7")
    with pytest.raises(HashMismatch, match=r"^block bafyrei[a-z2-7]+ does not match its hash$"):
        Car.from_bytes(data[:position] + b"P" + data[position + 1 :], max_bytes=10_000_000)


# Synthetic repositories, signed here: the commit and record shapes the reference PDS never produces.

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
RKEY = "3n3gh6cnbls2k"
RECORD = track(1)


def synthetic(curve: str = "secp256k1", *, record: Any = RECORD, codec: int = 0x71, **commit_fields: Any) -> tuple[bytes, SigningKey]:
    private = new_key(curve)
    if codec == 0x71:
        record_cid, record_data = block(record)
    else:
        record_data = b"raw record"
        record_cid = cid_of(record_data, codec)
    root, nodes = build_mst({f"{TRACK}/{RKEY}".encode(): record_cid, b"app.bsky.feed.post/3aaaaaaaaaaaa": cid_of(b"p")})
    fields = {"did": DID, "data": root, **commit_fields}
    commit_cid, commit_data = commit(private, **fields)
    key = signing_key(did_document(DID, {"type": "Multikey", "publicKeyMultibase": multikey(private)}))
    return car([commit_cid], [(commit_cid, commit_data), *nodes.items(), (record_cid, record_data)]), key


@pytest.mark.parametrize("curve", ["p256", "secp256k1"])
def test_a_synthetic_repo_proves_on_either_curve(curve: str) -> None:
    data, key = synthetic(curve)
    assert verify_record(data, did=DID, collection=TRACK, rkey=RKEY, key=key) == Proven(RECORD, cid_str(block(RECORD)[0]), "3n3gh6cthtk2k")
    assert verify_record(data, did=DID, collection=TRACK, rkey="3n3gh6cnbls2a", key=key) == Absent("3n3gh6cthtk2k")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"version": 2}, "commit version 2 is not 3"),
        ({"version": "3"}, "commit version 3 is not 3"),
        ({"version": None}, "commit lacks version"),
        ({"extra": 1}, "commit has unexpected fields extra"),
        ({"rev": "not-a-tid"}, "commit rev 'not-a-tid' is not a TID"),
        ({"rev": 7}, "commit rev '7' is not a TID"),
        ({"did": 7}, "commit did is not a string"),
        ({"data": b"\x01\x02"}, "commit data is not a dag-cbor CID"),
        ({"data": cid_of(b"x", 0x55)}, "commit data is not a dag-cbor CID"),
        ({"prev": 1}, "commit prev is neither null nor a dag-cbor CID"),
    ],
)
def test_malformed_commits_are_refused(fields: dict[str, Any], reason: str) -> None:
    data, key = synthetic(**fields)
    with pytest.raises(MalformedBlock) as caught:
        verify_record(data, did=DID, collection=TRACK, rkey=RKEY, key=key)
    assert caught.value.reason == reason


def test_a_commit_without_prev_is_refused() -> None:
    private = new_key()
    commit_cid, commit_data = block({"did": DID, "version": 3, "data": cid_of(b"x"), "rev": "3n3gh6cthtk2k", "sig": bytes(64)})
    key = signing_key(did_document(DID, {"type": "Multikey", "publicKeyMultibase": multikey(private)}))
    with pytest.raises(MalformedBlock) as caught:
        verify_record(car([commit_cid], [(commit_cid, commit_data)]), did=DID, collection=TRACK, rkey=RKEY, key=key)
    assert caught.value.reason == "commit lacks prev"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"did": DID, "version": 3, "data": cid_of(b"x"), "rev": "3n3gh6cthtk2k", "prev": None, "sig": bytes(63)}, "commit sig is not 64 bytes"),
        ([1, 2], "commit {cid} is not a map"),
    ],
)
def test_commit_shapes(value: Any, reason: str) -> None:
    commit_cid, commit_data = block(value)
    key = signing_key(did_document(DID, {"type": "Multikey", "publicKeyMultibase": multikey(new_key())}))
    with pytest.raises(MalformedBlock) as caught:
        verify_record(car([commit_cid], [(commit_cid, commit_data)]), did=DID, collection=TRACK, rkey=RKEY, key=key)
    assert caught.value.reason == reason.format(cid=cid_str(commit_cid))


def test_records_must_be_dag_cbor_maps() -> None:
    data, key = synthetic(record=["not", "a", "map"])
    with pytest.raises(MalformedBlock) as caught:
        verify_record(data, did=DID, collection=TRACK, rkey=RKEY, key=key)
    assert caught.value.reason == f"record {cid_str(block(['not', 'a', 'map'])[0])} is not a map"
    data, key = synthetic(codec=0x55)
    with pytest.raises(MalformedBlock) as caught:
        verify_record(data, did=DID, collection=TRACK, rkey=RKEY, key=key)
    assert caught.value.reason == f"record {cid_str(cid_of(b'raw record', 0x55))} is not dag-cbor"


@pytest.mark.parametrize(
    ("collection", "rkey", "reason"),
    [
        ("app.relay", RKEY, "'app.relay' is not a collection NSID"),
        ("app.relay.track/x", RKEY, "'app.relay.track/x' is not a collection NSID"),
        (TRACK, "..", "'..' is not a record key"),
        (TRACK, "a/b", "'a/b' is not a record key"),
        (TRACK, "", "'' is not a record key"),
    ],
)
def test_bad_paths_are_refused_before_reading(collection: str, rkey: str, reason: str) -> None:
    with pytest.raises(ProofError) as caught:
        verify_record(b"", did=DID, collection=collection, rkey=rkey, key=synthetic()[1])
    assert caught.value.reason == reason
