"""atproto datetimes: ISO 8601 with a timezone in, UTC with milliseconds and 'Z' out.

Times inside the service are integer microseconds since the epoch (cheap to compare, to page by and to
send); these are the two conversions at its edges.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_from_us(us: int) -> str:
    """`2026-05-25T14:23:29.000Z`: the shape atproto datetimes use."""
    moment = _EPOCH + timedelta(microseconds=us)
    # The year padded by hand: glibc's %Y writes year 999 as "999", which is no ISO 8601.
    return f"{moment.year:04d}-" + moment.strftime("%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class NoTimezone(ValueError):
    """An ISO 8601 time without a timezone: which instant it names is anyone's guess."""


def us_from_iso(value: str) -> int:
    """Microseconds since the epoch; ValueError names why `value` is not a timezone-aware ISO 8601 time."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value[:64]!r} is not an ISO 8601 datetime") from None
    if parsed.tzinfo is None:
        raise NoTimezone(f"{value[:64]!r} has no timezone")
    return (parsed - _EPOCH) // timedelta(microseconds=1)
