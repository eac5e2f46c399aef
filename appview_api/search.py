"""Search terms from the user's `q`: the normalization both the SQL and the response cache key rely on."""

from __future__ import annotations

from appview_api.xrpc import invalid

MAX_TERMS = 8  # each term adds three ILIKE scans of the candidate rows


def terms(q: str) -> tuple[str, ...]:
    """Lowercased, whitespace-separated, de-duplicated terms in first-seen order; 400 if none or too many."""
    found = tuple(dict.fromkeys(q.lower().split()))
    if not found:
        raise invalid("q has no search terms")
    if len(found) > MAX_TERMS:
        raise invalid(f"q has {len(found)} terms; at most {MAX_TERMS} are allowed")
    return found
