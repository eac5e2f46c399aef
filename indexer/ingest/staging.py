"""A planned batch in the shape the store writes: its track changes as one Arrow table.

The feed process stages each batch it plans and ships it to the writing process, so building the table
(~2.5 µs an event in Python) happens beside the writes, not in their process. A staged batch pickles in
well under a millisecond per 10,000 tracks; the planner's objects took ~80 ms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from indexer.ingest.planner import AccountChange, Batch, Rejection

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
class StagedBatch:
    tracks: pa.Table | None
    accounts: list[AccountChange] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    new_accounts: list[str] = field(default_factory=list)
    identities: set[str] = field(default_factory=set)
    cursor: int | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def has_changes(self) -> bool:
        return bool(self.tracks is not None or self.accounts or self.rejections or self.new_accounts)


def stage(batch: Batch) -> StagedBatch:
    return StagedBatch(
        tracks=_tracks_table(batch) if batch.tracks else None,
        accounts=list(batch.accounts.values()),
        rejections=batch.rejections,
        new_accounts=sorted(batch.new_accounts),
        identities=batch.identities,
        cursor=batch.cursor,
        counts=dict(batch.counts),
    )


def _tracks_table(batch: Batch) -> pa.Table:
    changes = list(batch.tracks.values())
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
    ]
    return pa.Table.from_arrays(
        [pa.array(values, column.type) for values, column in zip(columns, TRACK_SCHEMA, strict=True)],
        schema=TRACK_SCHEMA,
    )
