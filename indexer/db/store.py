"""The store's interface: everything the rest of the service asks of the index, and nothing of how.

The planner, the consumer and the API see only this; a backend (DuckDB today) implements it with all of
its SQL. Writes are called from the one writer thread (`writer.py`); reads from any thread. A backend
raises `StoreUnavailable` when it cannot reach its database and `StoreError` for any other failure.

Every write the API must reflect stamps the rows it touches with a time that rises from commit to
commit (`changed_us` on tracks; `first_seen_us` and `handle_resolved_us` on accounts), so "what changed
since I last looked" is a plain comparison with the stamps a catalog has seen.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Protocol

from indexer.db.batch import Batch, DiscoveryPage, ProofOutcomes, SyncBatch
from indexer.db.rows import (
    AccountRow,
    AudioResult,
    DiscoveryRun,
    ProofJob,
    Status,
    StoredCursor,
    SyncClaim,
    SyncProgress,
    TrackRow,
)

NO_AUDIO = "none"  # audio_state of a tombstone
WINDOW_GAP_KEY = "window_gap"  # meta: the last gap the stream showed (JSON), for health and status


def now_us() -> int:
    return time.time_ns() // 1000


class CatalogSnapshot(Protocol):
    """Reads that all see the same commits."""

    def stamps(self) -> tuple[int, int]:
        """The newest stamps on tracks and on accounts: where catching up starts after a full load."""
        ...

    def accounts(self, since: int | None) -> list[AccountRow]:
        """Every account (since None), or those stamped after `since`."""
        ...

    def tracks(self, since: int | None) -> Iterator[list[TrackRow]]:
        """Visible tracks (since None), or every track row stamped after `since`, in batches."""
        ...


class Store(Protocol):
    generation: int  # bumped after every commit that changes what readers see

    def close(self) -> None: ...

    # -- reads --------------------------------------------------------------------------------------

    def cursor(self) -> StoredCursor | None: ...

    def known_accounts(self) -> dict[str, int]:
        """Every indexed account, with the stream time of its first commit."""
        ...

    def pending_urls(self) -> list[str]:
        """Audio URLs of live tracks still waiting for a check."""
        ...

    def unresolved_dids(self) -> list[str]: ...

    def pending_proofs(self, now_us: int) -> list[ProofJob]:
        """Track rows whose record waits for its PDS's proof and may be asked now."""
        ...

    def unproven(self, jobs: list[ProofJob]) -> list[ProofJob]:
        """Those of `jobs` whose row still waits for exactly that proof: not a replayed event whose record
        was proven (or replaced) already."""
        ...

    def stale_audio(self, checked_before_us: int, limit: int) -> list[str]:
        """Audio URLs whose last answer (verified or unavailable) is older than that: link rot shows."""
        ...

    def stale_handles(self, resolved_before_us: int, limit: int) -> list[str]:
        """Accounts whose handle was last verified (or found wanting) before that, oldest first."""
        ...

    def meta(self, key: str) -> str | None: ...

    def catalog(self) -> AbstractContextManager[CatalogSnapshot]: ...

    def key_in_use(self, key: str, besides: tuple[str, str] | None = None) -> bool:
        """Does a live track other than `besides` (did, rkey) use the audio object `key`, from any base URL?"""
        ...

    def status(self, recent_rejections: int) -> Status: ...

    def account_bytes(self, did: str) -> int:
        """What the audio objects of the account's live tracks weigh, as its publishes recorded them."""
        ...

    def oauth_session(self, key: str) -> bytes | None:
        """The sealed web sign-in session stored under `key` (a hash of its cookie), if any."""
        ...

    def sync_progress(self, since_us: int = 0) -> SyncProgress:
        """Account syncs asked for at or after `since_us`, by state, and the tracks the synced ones hold."""
        ...

    def discovery_runs(self) -> list[DiscoveryRun]: ...

    # -- writes (the writer thread only) --------------------------------------------------------------

    def lead(self) -> bool:
        """Hold the indexer's writer lock, taking it if it is free; False while another indexer holds it.
        Batches with a Jetstream cursor (and rewinds) are written only under it, so exactly one indexer
        writes however many processes share the database."""
        ...

    def apply(self, batch: Batch, source: str | None) -> list[str]:
        """Commit a batch with its cursor; return the audio URLs that now need a check."""
        ...

    def apply_proofs(self, outcomes: ProofOutcomes) -> list[str]:
        """Record what PDSes proved; returns the audio URLs of superseded records that now need a check."""
        ...

    def record_audio(self, results: Iterable[AudioResult]) -> None:
        """Store finished checks and carry each verdict to every live track with that URL."""
        ...

    def set_handles(self, handles: Mapping[str, str | None]) -> None:
        """Record resolved handles (None: no valid handle)."""
        ...

    def rewind(self, time_us: int, source: str | None) -> None: ...

    # Repository syncs (backfill): the per-account state machine and the relays' listings.

    def claim_syncs(self, now_us: int, limit: int) -> list[SyncClaim]:
        """Mark up to `limit` due syncs (pending, or failed and past their wait) syncing, and return them."""
        ...

    def reset_syncs(self) -> int:
        """Syncs left `syncing` by a process that stopped (or died) mid-way are pending again; how many."""
        ...

    def apply_syncs(self, batch: SyncBatch) -> list[str]:
        """Commit finished syncs; returns the audio URLs that now need a check."""
        ...

    def request_syncs(self, dids: list[str] | None, reason: str) -> int:
        """Ask these accounts (None: every account the index knows, and every relay's listing from its first
        page) to sync again now; returns how many syncs were asked for."""
        ...

    def record_discovery(self, page: DiscoveryPage) -> None:
        """A relay's page: its accounts not yet known become pending syncs, with the cursor, at once."""
        ...

    def record_upload(self, did: str, key: str, size: int) -> None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def keep_meta(self, key: str, value: str, replace: str | None) -> str:
        """Store `value` under `key` if nothing is stored there yet, or only `replace`; return what is stored
        now. Processes sharing a database that each make a secret at once thus all keep the same one."""
        ...

    # Web sign-in: sealed blobs the API alone can open, keyed by hashes of what the browser holds.

    def save_oauth_session(self, key: str, did: str, sealed: bytes) -> None:
        """Create or replace a session (after sign-in and after every token refresh)."""
        ...

    def delete_oauth_session(self, key: str) -> None: ...

    def save_oauth_request(self, key: str, sealed: bytes, expires_us: int) -> None:
        """Keep a sign-in in flight until its callback, or until `expires_us`."""
        ...

    def take_oauth_request(self, key: str, now_us: int) -> bytes | None:
        """Remove a sign-in in flight and return it, unless it has expired: each can complete once."""
        ...

    def purge_oauth(self, now_us: int, idle_before_us: int) -> None:
        """Drop expired sign-ins in flight and sessions unused since `idle_before_us`."""
        ...
