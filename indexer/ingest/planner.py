"""The sans-I/O core: decide what a run of Jetstream events changes in the index.

`Planner.plan` takes parsed events and returns a `Batch`, which the store applies in one transaction
together with the cursor. It knows the accounts we index (so the events of the millions of accounts we
do not index cost one set lookup) and nothing of sockets or SQL. Within a batch only the newest rev of
each record survives, because the store's upsert can touch a row once per statement; across batches the
store compares revs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from indexer.atproto.records import Track, validate_track
from indexer.errors import InvalidRecord
from indexer.ingest.events import TRACK_COLLECTION, Account, Commit, Event, Identity


@dataclass(slots=True)
class TrackChange:
    """An upsert of one record, or its tombstone when `track` is None."""

    did: str
    rkey: str
    rev: str
    cid: str | None
    track: Track | None
    time_us: int


@dataclass(slots=True)
class AccountChange:
    did: str
    seq: int
    active: bool
    status: str | None


@dataclass(slots=True)
class Rejection:
    uri: str
    rev: str
    reason: str
    time_us: int


@dataclass
class Batch:
    tracks: dict[tuple[str, str], TrackChange] = field(default_factory=dict)
    accounts: dict[str, AccountChange] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    new_accounts: set[str] = field(default_factory=set)
    identities: set[str] = field(default_factory=set)
    cursor: int | None = None
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def has_changes(self) -> bool:
        return bool(self.tracks or self.accounts or self.rejections or self.new_accounts)


class Planner:
    """Holds the set of indexed accounts (seeded from the store); their state lives in the store."""

    def __init__(self, known: set[str] | None = None, max_future_us: int = 86_400_000_000) -> None:
        self.known: set[str] = set(known or ())
        self.max_future_us = max_future_us

    def plan(self, events: list[Event]) -> Batch:
        batch = Batch()
        for event in events:
            if batch.cursor is None or event.time_us > batch.cursor:
                batch.cursor = event.time_us
            if isinstance(event, Commit):
                self._commit(batch, event)
            elif isinstance(event, Account):
                self._account(batch, event)
            elif isinstance(event, Identity) and event.did in self.known:
                batch.identities.add(event.did)
                batch.counts["identity"] += 1
        return batch

    def _commit(self, batch: Batch, commit: Commit) -> None:
        if commit.collection != TRACK_COLLECTION:
            batch.counts["ignored"] += 1
            return
        track = None
        if commit.operation != "delete":
            try:
                track = validate_track(commit, self.max_future_us)
            except InvalidRecord as exc:
                batch.rejections.append(Rejection(commit.uri, commit.rev, exc.reason, commit.time_us))
                batch.counts["rejected"] += 1
                return
        key = (commit.did, commit.rkey)
        previous = batch.tracks.get(key)
        if previous is not None and previous.rev >= commit.rev:
            batch.counts["stale"] += 1
            return
        batch.tracks[key] = TrackChange(commit.did, commit.rkey, commit.rev, commit.cid, track, commit.time_us)
        batch.counts[commit.operation] += 1
        if commit.did not in self.known:
            self.known.add(commit.did)
            batch.new_accounts.add(commit.did)
            batch.identities.add(commit.did)

    def _account(self, batch: Batch, event: Account) -> None:
        if event.did not in self.known:
            return
        previous = batch.accounts.get(event.did)
        if previous is not None and previous.seq > event.seq:
            return
        batch.accounts[event.did] = AccountChange(event.did, event.seq, event.active, event.status)
        batch.counts["account"] += 1
