"""The sans-I/O core of record proofs: what a PDS's answer means for the index.

A job is a record as the stream claimed it (rev R, CID C, or no CID for a deletion); the PDS proves the
record as it is now, at its repository's rev Q:

- the same CID (or, for a deletion, no record), at Q >= R: **proven**, the row shows once its audio does;
- another CID or no record, at a rev newer than the event's: **superseded**, and what the PDS proved is
  applied at Q, like any change (a record the PDS holds but that breaks the lexicon is a rejection and a
  tombstone), never the unproven event;
- another CID or no record at the event's own rev, or a repository older than the event: **forged**, kept
  in `rejections`, and the claim is *overruled*: its rev is forgotten and what the PDS proved applies in
  its place, at Q. A forged update or delete of a real track so leaves the real track standing, and a
  forged rev far ahead cannot hold back the author's next real change;
- an answer that proves nothing (hashes, signature, tree): **forged** too, but with no truth to put in its
  place the row is marked forged and never served;
- no answer (down, busy, slow): **unreachable**, the row waits and is asked again later, with backoff (and
  not before the PDS's Retry-After).
"""

from __future__ import annotations

import time
from collections import Counter

from indexer.atproto.proof import Absent, Proven
from indexer.atproto.records import validate_track
from indexer.atproto.uri import record_uri
from indexer.db.batch import ProofDelay, ProofMark, ProofOutcomes, Rejection
from indexer.db.rows import ProofJob
from indexer.errors import InvalidRecord
from indexer.ingest.planner import PROVEN, TrackChange, track_table
from indexer.net.prover import ProofResult

FORGED = "forged"
RETRY_MAX_SECONDS = 3600.0


def outcomes(
    results: list[ProofResult], max_future_us: int, attempts: dict[ProofJob, int], retry_seconds: float = 60.0
) -> ProofOutcomes:
    """`attempts`: how many times each job has found its PDS unreachable so far (the wait, from
    `retry_seconds`, doubles with each)."""
    decided = ProofOutcomes()
    counts: Counter[str] = Counter()
    superseded: list[TrackChange] = []
    now = time.time_ns() // 1000
    for result in results:
        job = result.job
        if result.unreachable is not None:
            tries = attempts.get(job, 0)
            wait = max(min(retry_seconds * 2**tries, RETRY_MAX_SECONDS), result.retry_after)
            decided.delays.append(ProofDelay(job.did, job.rkey, job.rev, result.unreachable, now + int(wait * 1e6)))
            counts["unreachable"] += 1
            continue
        if result.refused is not None:
            decided.marks.append(ProofMark(job.did, job.rkey, job.rev, FORGED, result.refused))
            _reject(decided, job, result.refused, now)
            counts["forged"] += 1
            continue
        answer = result.answer
        assert answer is not None  # neither unreachable nor refused: answered
        if answer.rev > job.rev:
            counts["superseded" if not _same(job, answer) else "proven"] += 1
            if _same(job, answer):  # unchanged since: what the stream said is what the PDS holds
                decided.marks.append(ProofMark(job.did, job.rkey, job.rev, PROVEN))
            else:
                superseded.append(_change(job, answer, max_future_us, decided, now))
            continue
        if answer.rev == job.rev and _same(job, answer):
            decided.marks.append(ProofMark(job.did, job.rkey, job.rev, PROVEN))
            counts["proven"] += 1
            continue
        _reject(decided, job, _forgery(job, answer), now)
        decided.overruled.append(job)
        superseded.append(_change(job, answer, max_future_us, decided, now))
        counts["forged"] += 1
    decided.superseded = track_table(superseded) if superseded else None
    decided.counts = dict(counts)
    return decided


def _forgery(job: ProofJob, answer: Proven | Absent) -> str:
    """Why the claim cannot be what the PDS wrote: the PDS is at the event's rev or before it."""
    if answer.rev < job.rev:
        return f"the PDS's repository is at rev {answer.rev}, older than the event's {job.rev}"
    held = f"record {answer.cid}" if isinstance(answer, Proven) else "no record"
    claimed = "no record" if job.cid is None else f"record {job.cid}"
    return f"at rev {job.rev} the PDS holds {held}, not the event's {claimed}"


def _reject(decided: ProofOutcomes, job: ProofJob, reason: str, now: int) -> None:
    uri = record_uri(job.did, job.rkey)
    decided.rejections.append(Rejection(uri, job.rev, f"unproven: {reason}"[:300], now))


def _same(job: ProofJob, answer: Proven | Absent) -> bool:
    return answer.cid == job.cid if isinstance(answer, Proven) else job.cid is None


def _change(
    job: ProofJob, answer: Proven | Absent, max_future_us: int, decided: ProofOutcomes, now: int
) -> TrackChange:
    """What the PDS proved, as a change at its repository's rev: the record, or its tombstone."""
    track = None
    if isinstance(answer, Proven):
        try:
            track = validate_track(answer.record, job.rkey, now, max_future_us)
        except InvalidRecord as exc:
            decided.rejections.append(Rejection(record_uri(job.did, job.rkey), answer.rev, exc.reason[:300], now))
    cid = answer.cid if isinstance(answer, Proven) and track is not None else None
    return TrackChange(job.did, job.rkey, answer.rev, cid, track, now, now, PROVEN)

