"""Record proofs, end to end and under the microscope. `--help` for options.

    .venv/bin/python scripts/bench_verify.py                 # end to end: 5,000 records, 50 accounts
    .venv/bin/python scripts/bench_verify.py --micro         # CPU per proof on the PDS's own CARs
    .venv/bin/python scripts/bench_verify.py --micro --synthetic   # CARs built and signed here, no node

End to end, on the local reference PDS (its own node process) with a local audio host (its own process),
and a test Jetstream (its own process) replaying the PDS's real commits:
- `proofs_per_s`: our verifier (Prover: DID document, guarded fetch, every check; then the verdicts
  decided and written through the Writer into DuckDB), next to `bare_getrecord_per_s`: a bare httpx loop
  that only fetches getRecord and decodes the CAR (libipld, no checks), at the same concurrency (the
  per-host cap: every account lives on one PDS);
- `cpu_us_per_proof`: this process's CPU time over the verifier's run, per proof;
- `visible_s_verified` / `visible_s_unverified`: seconds from the Indexer's start (the stream holds the
  5,000 creates) until the API's catalog serves all of them, with RELAY_VERIFY_RECORDS on and off.
The last line is one JSON object with the figures.

`--micro`: CPU time (process_time) per call, the median of `--rounds` rounds over every proof:
- `verify_us`: `verify_record` from bytes to Proven (hash checks, commit, signature, MST path, record);
- `signature_us`: `SigningKey.verify` alone (ECDSA);
- `parse_us`: `Car.from_bytes` (our reader, with hash checks);
- `decode_car_us`: libipld's `decode_car`, which checks nothing (the floor for reading a CAR);
- `repo_verify_ms`: `verify_repo` over a getRepo CAR of the same account (all its records).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
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
from indexer.config import Settings  # noqa: E402

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
    from tests.fixtures.pds import running_pds

    with running_pds() as pds:
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


def micro(args: argparse.Namespace) -> None:
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


# End to end ----------------------------------------------------------------------------------------------


def _audio_host(ready: mp.Queue, stop: Any) -> None:
    from tests.servers.audio import AudioServer

    with AudioServer() as server:
        ready.put(server.base_url)
        stop.wait()


def _jetstream_host(events: list[dict[str, Any]], ready: mp.Queue, stop: Any) -> None:
    from tests.servers.jetstream import JetstreamServer

    async def serve() -> None:
        async with JetstreamServer(events) as server:
            ready.put(server.url)
            while not stop.is_set():
                await asyncio.sleep(0.1)

    asyncio.run(serve())


def write_tracks(pds: Any, accounts: int, per_account: int, audio_base: str) -> list[dict[str, Any]]:
    """`accounts` × `per_account` creates through applyWrites; each returned as the event a relay carries."""
    from tests.servers.events import commit

    events = []
    with httpx.Client(base_url=pds.pds_url, timeout=120) as client:
        for a in range(accounts):
            account = pds.create_account(f"bench{a}")
            for start in range(0, per_account, 100):
                records = [track(a * per_account + n) for n in range(start, min(per_account, start + 100))]
                for record in records:
                    record["audioUrl"] = f"{audio_base}/audio/{record['title'].replace(' ', '-')}.mp3"
                create = "com.atproto.repo.applyWrites#create"
                writes = [{"$type": create, "collection": TRACK, "value": record} for record in records]
                body = {"repo": account.did, "writes": writes}
                response = client.post("/xrpc/com.atproto.repo.applyWrites", json=body, headers=account.auth_headers)
                response.raise_for_status()
                answer = response.json()
                rev = answer["commit"]["rev"]
                for record, result in zip(records, answer["results"], strict=True):
                    rkey = result["uri"].rsplit("/", 1)[1]
                    events.append(commit(account.did, rkey, rev, "create", record, cid=result["cid"]))
    return events


def bench_settings(pds: Any, jetstream_url: str, verify: bool) -> Settings:
    from tests.builders import make_settings

    return make_settings(
        RELAY_JETSTREAM_URLS=jetstream_url,
        RELAY_PLC_URL=pds.plc_url,
        RELAY_DNS_NAMESERVERS=pds.nameserver,
        RELAY_ALLOW_INSECURE=True,
        RELAY_VERIFY_RECORDS=verify,
        RELAY_LOG_LEVEL="WARNING",
    )


async def bare_getrecord(pds_url: str, events: list[dict[str, Any]], concurrency: int) -> float:
    """getRecord and decode the CAR, nothing else: the ceiling for the verifier's fetches."""
    slots = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=pds_url, limits=limits, timeout=60) as client:

        async def one(event: dict[str, Any]) -> None:
            params = {"did": event["did"], "collection": TRACK, "rkey": event["commit"]["rkey"]}
            async with slots:
                response = await client.get("/xrpc/com.atproto.sync.getRecord", params=params)
            response.raise_for_status()
            libipld.decode_car(response.content)

        start = time.perf_counter()
        await asyncio.gather(*(one(event) for event in events))
        return len(events) / (time.perf_counter() - start)


async def ours(settings: Settings, events: list[dict[str, Any]], db: Path) -> tuple[float, float]:
    """Prove every event's record and write the verdicts, as the indexer's proof queue does; (per s, CPU µs)."""
    from indexer.db.duckdb_store import DuckDBStore
    from indexer.db.rows import ProofJob
    from indexer.ingest.index import Index
    from indexer.ingest.proofs import outcomes
    from indexer.ingest.workqueue import WorkQueue
    from indexer.net.outbound import Outbound
    from indexer.net.prover import ProofResult, Prover
    from tests.builders import wire

    store = DuckDBStore(db)
    index = Index(store, max_future_us=settings.ingest.max_future_us, verify=True)
    outbound = Outbound(settings)
    try:
        await index.commit(index.planner.plan(wire(*events)), "jetstream")  # stored, pending their proofs
        jobs = [ProofJob(e["did"], e["commit"]["rkey"], e["commit"]["rev"], e["commit"]["cid"]) for e in events]
        prover = Prover(settings.proofs, outbound.identity, outbound.web, allow_insecure=True)
        done = asyncio.Event()
        written = 0

        async def record(results: list[ProofResult]) -> None:
            nonlocal written
            await index.writer.apply_proofs(outcomes(results, settings.ingest.max_future_us, {}))
            written += len(results)
            if written == len(jobs):
                done.set()

        queue = WorkQueue("proofs", prover.prove, record, concurrency=settings.proofs.concurrency)
        worker = asyncio.create_task(queue.run())
        cpu, start = time.process_time(), time.perf_counter()
        queue.submit(jobs)
        await done.wait()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        worker.cancel()
        proven = store.reader().execute("SELECT count(*) FROM tracks WHERE proof = 'proven'").fetchone()
        assert proven == (len(jobs),), f"only {proven} of {len(jobs)} proven"
        return len(jobs) / elapsed, cpu / len(jobs) * 1e6
    finally:
        await outbound.aclose()
        index.close()
        store.close()


async def visible_after(settings: Settings, cursor: int, count: int, db: Path) -> float:
    """Seconds from the Indexer's start until the catalog serves `count` tracks."""
    from indexer.db.duckdb_store import DuckDBStore
    from indexer.ingest.index import Index
    from indexer.ingest.service import Indexer

    store = DuckDBStore(db)
    index = Index(store, max_future_us=settings.ingest.max_future_us, verify=settings.proofs.verify_records)
    indexer = Indexer(settings, index, replay_from=cursor)

    def served() -> int:
        with store.catalog() as snapshot:
            return sum(len(rows) for rows in snapshot.tracks(None))

    start = time.perf_counter()
    task = asyncio.create_task(indexer.run())
    try:
        while served() < count:
            if task.done():
                task.result()
                raise AssertionError("the indexer stopped")
            await asyncio.sleep(0.05)
        return time.perf_counter() - start
    finally:
        indexer.stop()
        await task
        index.close()
        store.close()


def end_to_end(args: argparse.Namespace) -> None:
    from tests.fixtures.pds import running_pds

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    audio_ready: mp.Queue = ctx.Queue()
    audio = ctx.Process(target=_audio_host, args=(audio_ready, stop), daemon=True)
    audio.start()
    audio_base = audio_ready.get(timeout=60)
    try:
        with running_pds() as pds, tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            events = write_tracks(pds, args.accounts, args.records // args.accounts, audio_base)
            took = time.perf_counter() - start
            print(f"  {len(events):,} records over {args.accounts} accounts written in {took:.1f}s")
            js_ready: mp.Queue = ctx.Queue()
            host = ctx.Process(target=_jetstream_host, args=(events, js_ready, stop), daemon=True)
            host.start()
            jetstream_url = js_ready.get(timeout=60)
            verified = bench_settings(pds, jetstream_url, verify=True)
            unverified = bench_settings(pds, jetstream_url, verify=False)
            concurrency = min(verified.proofs.concurrency, verified.proofs.per_host)  # one PDS host
            pds_url = pds.pds_url
            bare = asyncio.run(bare_getrecord(pds_url, events, concurrency))
            print(f"  bare getRecord + decode_car: {bare:,.0f}/s at concurrency {concurrency}")
            proofs, cpu_us = asyncio.run(ours(verified, events, Path(tmp) / "proofs.duckdb"))
            print(f"  ours (prove + decide + write): {proofs:,.0f}/s ({proofs / bare:.2f}x), {cpu_us:,.0f} µs CPU each")
            cursor = events[0]["time_us"]
            shown_verified = asyncio.run(visible_after(verified, cursor, len(events), Path(tmp) / "on.duckdb"))
            shown_unverified = asyncio.run(visible_after(unverified, cursor, len(events), Path(tmp) / "off.duckdb"))
            print(f"  all served after {shown_verified:.1f}s with proofs, {shown_unverified:.1f}s without")
    finally:
        stop.set()
        audio.join(timeout=10)
    figures = {
        "records": len(events),
        "accounts": args.accounts,
        "concurrency": concurrency,
        "proofs_per_s": round(proofs),
        "bare_getrecord_per_s": round(bare),
        "cpu_us_per_proof": round(cpu_us),
        "visible_s_verified": round(shown_verified, 2),
        "visible_s_unverified": round(shown_unverified, 2),
    }
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--micro", action="store_true", help="CPU per proof, no network")
    parser.add_argument("--records", type=int, default=None, help="records (end to end 5,000; --micro 50)")
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--synthetic", action="store_true", help="--micro: build and sign CARs here instead of the PDS")
    args = parser.parse_args()
    if args.micro:
        args.records = args.records or 50
        micro(args)
    else:
        args.records = args.records or 5000
        end_to_end(args)




if __name__ == "__main__":
    main()
