"""A batch in the shape the store writes: its track changes as one Arrow table, the rest as small lists.

The planner builds batches in the feed process and ships them to the writing process: an Arrow table of
10,000 tracks pickles in well under a millisecond, where the planner's objects took ~80 ms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

# The columns of the `staged` relation the store's upsert reads, in order.
TRACK_SCHEMA = pa.schema(
    [
        ("did", pa.string()),
        ("rkey", pa.string()),
        ("rev", pa.string()),
        ("cid", pa.string()),
        ("deleted", pa.bool_()),
        ("title", pa.string()),
        ("artist", pa.string()),
        ("album", pa.string()),
        ("audio_url", pa.string()),
        ("file_type", pa.string()),
        ("duration", pa.int32()),
        ("created_at", pa.string()),
        ("created_us", pa.int64()),
        ("event_time_us", pa.int64()),
    ]
)


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


@dataclass(slots=True)
class Batch:
    """What one transaction writes, with the Jetstream cursor that covers it (None: not a stream event)."""

    tracks: pa.Table | None = None
    accounts: list[AccountChange] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    new_accounts: list[str] = field(default_factory=list)
    identities: set[str] = field(default_factory=set)
    cursor: int | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def has_changes(self) -> bool:
        return bool(self.tracks is not None or self.accounts or self.rejections or self.new_accounts)
