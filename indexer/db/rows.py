"""What the store gives back and takes besides batches: cursors, audio verdicts, catalog rows, status."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, NamedTuple


@dataclass(frozen=True, slots=True)
class StoredCursor:
    time_us: int
    source: str | None
    updated_us: int


class AudioState(enum.StrEnum):
    PENDING = "pending"
    VERIFIED = "verified"
    UNAVAILABLE = "unavailable"
    UNREACHABLE = "unreachable"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class AudioResult:
    """The verdict on one audio URL, carried to every live track that uses it."""

    url: str
    state: AudioState
    reason: str
    status: int | None
    content_type: str | None


@dataclass(frozen=True, slots=True)
class ProofJob:
    """A record as the stream claimed it: the rev and CID its PDS must prove (cid None: a deletion)."""

    did: str
    rkey: str
    rev: str
    cid: str | None


class TrackRow(NamedTuple):
    """A track as the API's catalog needs it; `visible` is verified audio, not deleted, not hidden."""

    did: str
    rkey: str
    visible: bool
    cid: str | None
    title: str | None
    artist: str | None
    album: str | None
    audio_url: str | None
    file_type: str | None
    duration: int | None
    created_at: str | None
    indexed_us: int
    sort_us: int
    changed_us: int


@dataclass(frozen=True, slots=True)
class DiscoveryRun:
    """A relay's listing: in progress (`finished_us` None, going on from `cursor`), or finished."""

    relay: str
    cursor: str | None
    started_us: int
    finished_us: int | None
    repos: int


@dataclass(frozen=True, slots=True)
class SyncClaim:
    """An account a sync worker takes on, with the failures in a row before it (the backoff doubles)."""

    did: str
    attempts: int


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """Syncs by state and the tracks the synced ones hold, among those asked for since a time."""

    states: dict[str, int]
    records: int

    @property
    def total(self) -> int:
        return sum(self.states.values())

    @property
    def outstanding(self) -> int:
        return self.states.get("pending", 0) + self.states.get("syncing", 0)

    def counts(self) -> dict[str, int]:
        """As /xrpc/_health, /metrics and app.relay.admin.getStatus show them: done is synced, failed or
        inactive (failed ones are tried again later)."""
        states = {state: self.states.get(state, 0) for state in ("synced", "failed", "inactive", "pending", "syncing")}
        return {"total": self.total, "done": self.total - self.outstanding, **states, "records": self.records}


class AccountRow(NamedTuple):
    did: str
    handle: str | None
    resolved_us: int
    changed_us: int


Status = dict[str, Any]  # `relay-appview status --json`, as the store reports it
