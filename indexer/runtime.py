"""Interpreter settings for the two processes of ingest, measured with scripts/bench_ingest.py.

The feed process (receive, parse, plan) makes ~60k tracked objects a batch; the indexing process runs the
DuckDB writer thread beside an event loop (the API's, the audio checks'), and DuckDB needs the GIL back
after every step of a statement. CPython's defaults suit neither.
"""

from __future__ import annotations

import gc
import logging
import sys

SWITCH_INTERVAL_SECONDS = 0.0005
GC_THRESHOLDS = (50_000, 20, 20)


def tune_for_ingest() -> None:
    """Shorten the GIL switch interval and collect garbage less often, for the whole process.

    - At the default 5 ms switch interval the writer queued behind a busy event loop for up to 5 ms per
      DuckDB call; at 0.5 ms, with receive and parse still in the writer's process, the median of three
      runs went from ~34k to ~42k events/s.
    - A batch in flight is ~60k tracked objects that outlive the young generations, so at the default
      threshold (700) full collections ran several times a batch: ~4.5 µs an event of parse + plan, a
      quarter of it. A 50,000 threshold keeps cycles collected (asyncio makes some) at a fraction of that.
    """
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    gc.set_threshold(*GC_THRESHOLDS)


def configure_logging(level: str) -> None:
    """One line per record on stderr, for every process of the service."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
