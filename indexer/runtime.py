"""Interpreter settings for the indexing process, measured with scripts/bench_ingest.py.

Ingest runs two busy threads under one GIL: the event loop (receive, parse, plan) and the writer
(DuckDB, which releases the GIL while it works but needs it back after every call). CPython's defaults
suit neither.
"""

from __future__ import annotations

import gc
import sys

SWITCH_INTERVAL_SECONDS = 0.0005
GC_THRESHOLDS = (50_000, 20, 20)


def tune_for_ingest() -> None:
    """Shorten the GIL switch interval and collect garbage less often, for the whole process.

    - At the default 5 ms switch interval the writer queued behind the receive loop for up to 5 ms per
      DuckDB call, about 40 ms a batch; at 0.5 ms the median of three runs went from ~34k to ~42k events/s.
    - A batch in flight is ~60k tracked objects that outlive the young generations, so at the default
      threshold (700) full collections ran several times a batch: ~4.5 µs an event of parse + plan, a
      quarter of it. A 50,000 threshold keeps cycles collected (asyncio makes some) at a fraction of that.
    """
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    gc.set_threshold(*GC_THRESHOLDS)
