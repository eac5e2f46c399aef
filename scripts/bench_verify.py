"""Micro benchmark: CPU per getRecord proof, against only parsing the CAR. `--help` for options.

    .venv/bin/python scripts/bench_verify.py                 # real CARs from the local reference PDS
    .venv/bin/python scripts/bench_verify.py --synthetic     # CARs built and signed here, no node needed

Each figure is CPU time (process_time) per call, the median of `--rounds` rounds over every proof:
- `verify_us`: `verify_record` from bytes to Proven (hash checks, commit, signature, MST path, record);
- `signature_us`: `SigningKey.verify` alone (ECDSA);
- `parse_us`: `Car.from_bytes` (our reader, with hash checks);
- `decode_car_us`: libipld's `decode_car`, which checks nothing (the floor for reading a CAR);
- `repo_verify_ms`: `verify_repo` over a getRepo CAR of the same account (all its records).
A skeleton for the end-to-end benchmark (fetch + verify per event), which it leaves out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import libipld

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from indexer.atproto.car import Car  # noqa: E402
from indexer.atproto.keys import SigningKey, signing_key  # noqa: E402
from indexer.atproto.proof import Proven, verify_commit, verify_record, verify_repo  # noqa: E402

TRACK = "app.relay.track"


@dataclass
class Proofs:
    did: str
    key: SigningKey
    records: list[tuple[str, bytes]]  # (rkey, getRecord CAR)
    repo: bytes  # getRepo CAR


def track(index: int) -> dict[str, Any]:
    return {
        "$type": TRACK, "title": f"Track {index}", "artist": "Bench", "fileType": "mp3", "duration": index,
        "audioUrl": f"https://audio.example.test/{index}.mp3", "createdAt": "2025-10-28T22:30:00.000Z",
    }


def from_pds(count: int) -> Proofs:
    from tests.fixtures.pds import local_pds

    fixture = local_pds.__wrapped__()  # type: ignore[attr-defined]
    pds = next(fixture)
    try:
        account = pds.create_account("bench")
        rkeys = []
        with httpx.Client(base_url=pds.pds_url, timeout=30) as client:
            for index in range(count):
                body = {"repo": account.did, "collection": TRACK, "record": track(index)}
                response = client.post("/xrpc/com.atproto.repo.createRecord", json=body, headers=account.auth_headers)
                rkeys.append(response.json()["uri"].rsplit("/", 1)[1])
            params = {"did": account.did, "collection": TRACK}
            records = [(rkey, client.get("/xrpc/com.atproto.sync.getRecord", params={**params, "rkey": rkey}).content)
                       for rkey in rkeys]
            repo = client.get("/xrpc/com.atproto.sync.getRepo", params={"did": account.did}).content
        document = httpx.get(f"{pds.plc_url}/{account.did}", timeout=10).json()
        return Proofs(account.did, signing_key(document, account.did), records, repo)
    finally:
        next(fixture, None)


def synthetic(count: int) -> Proofs:
    from tests.repo_builders import block, build_mst, car, commit, did_document, multikey, new_key

    did, private = "did:plc:ewvi7nxzyoun6zhxrhs64oiz", new_key()
    records = {f"3k{index:011d}": block(track(index)) for index in range(count)}
    root, nodes = build_mst({f"{TRACK}/{rkey}".encode(): cid for rkey, (cid, _) in records.items()})
    commit_cid, commit_data = commit(private, did=did, data=root)
    everything = [(commit_cid, commit_data), *nodes.items(), *records.values()]
    full = car([commit_cid], everything)
    # A real getRecord CAR holds only the path; the whole tree costs the walk nothing extra, only parsing.
    with_tree = [(commit_cid, commit_data), *nodes.items()]
    per_record = [(rkey, car([commit_cid], [*with_tree, data])) for rkey, data in records.items()]
    key = signing_key(did_document(did, {"type": "Multikey", "publicKeyMultibase": multikey(private)}))
    return Proofs(did, key, per_record, full)


def per_call_us(calls: list[Callable[[], object]], rounds: int) -> float:
    medians = []
    for _ in range(rounds):
        start = time.process_time()
        for call in calls:
            call()
        medians.append((time.process_time() - start) / len(calls) * 1e6)
    return statistics.median(medians)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--synthetic", action="store_true", help="build and sign CARs here instead of the PDS")
    args = parser.parse_args()
    proofs = synthetic(args.records) if args.synthetic else from_pds(args.records)

    def verify(rkey: str, data: bytes) -> Callable[[], object]:
        return lambda: verify_record(data, did=proofs.did, collection=TRACK, rkey=rkey, key=proofs.key)

    assert all(isinstance(verify(rkey, data)(), Proven) for rkey, data in proofs.records)
    cars = [Car.from_bytes(data, max_bytes=1 << 20) for _, data in proofs.records]
    signed = []
    for parsed in cars:
        value = libipld.decode_dag_cbor(parsed.blocks[parsed.roots[0]])
        signature = value.pop("sig")
        signed.append((libipld.encode_dag_cbor(value), signature))
    repo = Car.from_bytes(proofs.repo, max_bytes=1 << 26)
    verify_commit(repo, did=proofs.did, key=proofs.key)
    rounds = args.rounds
    figures = {
        "source": "synthetic" if args.synthetic else "reference PDS",
        "curve": proofs.key.curve,
        "proof_car_bytes": statistics.median(len(data) for _, data in proofs.records),
        "verify_us": per_call_us([verify(rkey, data) for rkey, data in proofs.records], args.rounds),
        "signature_us": per_call_us([lambda u=u, s=s: proofs.key.verify(u, s) for u, s in signed], args.rounds),
        "parse_us": per_call_us([lambda d=d: Car.from_bytes(d, max_bytes=1 << 20) for _, d in proofs.records], rounds),
        "decode_car_us": per_call_us([lambda d=d: libipld.decode_car(d) for _, d in proofs.records], rounds),
        "repo_records": args.records,
        "repo_car_bytes": len(proofs.repo),
        "repo_verify_ms": per_call_us(
            [lambda: verify_repo(Car.from_bytes(proofs.repo, max_bytes=1 << 26), did=proofs.did, key=proofs.key)],
            args.rounds,
        ) / 1000,
    }
    figures["proofs_per_s_one_core"] = round(1e6 / figures["verify_us"])
    print(json.dumps({name: round(value, 1) if isinstance(value, float) else value for name, value in figures.items()}))


if __name__ == "__main__":
    main()
