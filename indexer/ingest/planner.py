"""The sans-I/O core: decide what a run of Jetstream events changes in the index.

`Planner.plan` takes parsed events and returns a `Batch` in the shape the store writes, which the store
applies in one transaction together with the cursor. The index must be a function of the event stream
alone, whatever the batch boundaries and however often a rewind replays a stretch of it:

- Events apply in stream order. A batch is a list of segments, each its account changes and then its
  track changes; an account event that follows a commit of the same account in the segment starts the
  next one, so a deletion, a create and a reactivation land in that order.
- Within a segment only the newest rev of each record survives (the store's upsert touches a row once per
  statement); across segments and batches the store compares revs, so replays change nothing.
- Account events of accounts we do not index are ignored (the millions of them cost one dict lookup).
  An account is indexed from its first commit's stream time (`since`); an account event older than that
  is ignored too, so that a replay after a restart, which knows the account already, ignores what a clean
  run ignored for not knowing it yet.

It knows nothing of sockets or SQL.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from indexer.atproto import tid
from indexer.atproto.datamodel import record_cid
from indexer.atproto.nsid import TRACK_COLLECTION
from indexer.atproto.records import Track, validate_track
from indexer.atproto.syntax import is_did
from indexer.atproto.uri import record_uri
from indexer.db.batch import TRACK_SCHEMA, AccountChange, Batch, Rejection, Segment
from indexer.errors import InvalidRecord
from indexer.ingest.events import Account, Commit, Event, Identity

MAX_REJECTED_CHARS = 300  # what a rejection keeps of a stranger's URI and reason
PENDING, PROVEN, UNVERIFIED = "pending", "proven", "unverified"  # a track's proof (see indexer/net/prover.py)


@dataclass(slots=True)
class TrackChange:
    """An upsert of one record, or its tombstone when `track` is None."""

    did: str
    rkey: str
    rev: str
    cid: str | None
    track: Track | None
    time_us: int
    first_us: int  # the stream time of the segment's first commit of the record: a new row is first seen then
    proof: str


@dataclass(slots=True)
class _Segment:
    accounts: dict[str, AccountChange] = field(default_factory=dict)
    tracks: dict[tuple[str, str], TrackChange] = field(default_factory=dict)
    track_dids: set[str] = field(default_factory=set)

    def finish(self) -> Segment:
        changes = list(self.tracks.values())
        return Segment(list(self.accounts.values()), track_table(changes) if changes else None)


class Planner:
    """Holds the indexed accounts and the stream time each was first seen at (seeded from the store)."""

    def __init__(
        self, known: Mapping[str, int] | None = None, max_future_us: int = 86_400_000_000, *, verify: bool = True
    ) -> None:
        """`verify`: a record from the stream waits for its PDS to prove it ("pending"); off, "unverified"."""
        self.known: dict[str, int] = dict(known or {})
        self.max_future_us = max_future_us
        self.proof = PENDING if verify else UNVERIFIED

    def plan(self, events: list[Event], proof: str | None = None) -> Batch:
        """`proof`: what the records are known to be, when not what the stream claims (a record this
        service just wrote to its PDS is `proven`)."""
        proof = proof or self.proof
        batch = Batch()
        counts: Counter[str] = Counter()
        segments = [_Segment()]
        for event in events:
            if batch.cursor is None or event.time_us > batch.cursor:
                batch.cursor = event.time_us
            if isinstance(event, Commit):
                self._commit(event, segments[-1], batch, counts, proof)
            elif isinstance(event, Account):
                self._account(event, segments, counts)
            elif isinstance(event, Identity) and event.did in self.known:
                batch.identities.add(event.did)
                counts["identity"] += 1
        batch.segments = [segment.finish() for segment in segments if segment.accounts or segment.tracks]
        batch.counts = dict(counts)
        return batch

    def _commit(self, commit: Commit, segment: _Segment, batch: Batch, counts: Counter[str], proof: str) -> None:
        if commit.collection != TRACK_COLLECTION:
            counts["ignored"] += 1
            return
        try:
            track = self._validate(commit)
            if track is not None and proof == PENDING:
                _check_cid(commit)
        except InvalidRecord as exc:
            uri = record_uri(commit.did, commit.rkey)
            batch.rejections.append(
                Rejection(_capped(uri), _capped(commit.rev), _capped(exc.reason), commit.time_us)
            )
            counts["rejected"] += 1
            return
        key = (commit.did, commit.rkey)
        previous = segment.tracks.get(key)
        if previous is not None and previous.rev >= commit.rev:
            counts["stale"] += 1
            return
        first_us = commit.time_us if previous is None else previous.first_us
        segment.tracks[key] = TrackChange(
            commit.did, commit.rkey, commit.rev, commit.cid, track, commit.time_us, first_us, proof
        )
        segment.track_dids.add(commit.did)
        counts[commit.operation] += 1
        if track is not None and commit.did not in self.known:
            # Deletes alone do not make an account ours: there is nothing of it to show or follow.
            self.known[commit.did] = commit.time_us
            batch.new_accounts[commit.did] = commit.time_us
            batch.identities.add(commit.did)

    def _validate(self, commit: Commit) -> Track | None:
        """The track of a create or update, None for a delete; InvalidRecord for anything we cannot store."""
        if not is_did(commit.did):
            raise InvalidRecord(f"did: {commit.did[:64]!r} is not a DID")
        if not tid.is_tid(commit.rkey):  # the lexicon keys tracks by TID: no other key names one of ours
            raise InvalidRecord(f"rkey: {commit.rkey[:64]!r} is not a TID")
        if not tid.is_tid(commit.rev):
            raise InvalidRecord(f"rev: {commit.rev[:64]!r} is not a TID")
        if commit.operation == "delete":
            return None
        return validate_track(commit.record, commit.rkey, commit.time_us, self.max_future_us)

    def _account(self, event: Account, segments: list[_Segment], counts: Counter[str]) -> None:
        since = self.known.get(event.did)
        if since is None or event.time_us < since:
            return
        if event.did in segments[-1].track_dids:
            segments.append(_Segment())  # after this account's commits: its own segment, in stream order
        segment = segments[-1]
        change = segment.accounts.get(event.did)
        if change is not None and (event.at_us, event.seq) <= (change.at_us, change.seq):
            counts["stale"] += 1
            return
        if change is None:
            change = AccountChange(event.did, event.at_us, event.seq, event.active, event.status)
            segment.accounts[event.did] = change
        else:
            change.at_us, change.seq, change.active, change.status = event.at_us, event.seq, event.active, event.status
        if event.status == "deleted":
            change.purge_at_us, change.purge_seq = event.at_us, event.seq
        counts["account"] += 1


def _check_cid(commit: Commit) -> None:
    """The proof checks the event's CID: the record stored beside it must be the one that CID names."""
    cid = record_cid(commit.record)
    if cid != commit.cid:
        raise InvalidRecord(f"cid: the record hashes to {cid}, not the event's {str(commit.cid)[:80]}")


def _capped(text: str) -> str:
    return text if len(text) <= MAX_REJECTED_CHARS else text[:MAX_REJECTED_CHARS] + "…"


def track_table(changes: list[TrackChange]) -> pa.Table:
    """The changes as the store's `staged` relation (~2.5 µs a track, in the feed process)."""
    tracks = [c.track for c in changes]
    columns = [
        [c.did for c in changes],
        [c.rkey for c in changes],
        [c.rev for c in changes],
        [c.cid for c in changes],
        [t is None for t in tracks],
        [t.title if t else None for t in tracks],
        [t.artist if t else None for t in tracks],
        [t.album if t else None for t in tracks],
        [t.audio_url if t else None for t in tracks],
        [t.file_type if t else None for t in tracks],
        [t.duration if t else None for t in tracks],
        [t.created_at if t else None for t in tracks],
        [t.created_us if t else None for t in tracks],
        [c.time_us for c in changes],
        [c.first_us for c in changes],
        [c.proof for c in changes],
    ]
    return pa.Table.from_arrays(
        [pa.array(values, column.type) for values, column in zip(columns, TRACK_SCHEMA, strict=True)],
        schema=TRACK_SCHEMA,
    )
