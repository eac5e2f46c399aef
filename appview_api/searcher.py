"""Search over the in-memory index: catch up with the store, rank in memory, let DuckDB judge visibility."""

from __future__ import annotations

import logging
import threading
import time

from appview_api import queries
from appview_api.search import Hit, SearchIndex
from appview_api.views import TrackRow
from indexer.store import Store

log = logging.getLogger(__name__)

# changed_us is stamped when a batch starts and becomes visible when it commits: re-read this far back so
# a batch that committed after a later-stamped one is not missed (rows seen already are skipped).
SLACK_US = 60_000_000

Key = tuple[str, str]


class Searcher:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.index = SearchIndex()
        self._generation = -1
        self._lock = threading.Lock()

    def build(self) -> None:
        """Index every live track (startup: ~1M tracks take seconds)."""
        started = time.monotonic()
        generation = self.store.generation
        self.index.apply(queries.index_rows(self.store.reader(), None))
        self._generation = generation
        log.info("search index built tracks=%d seconds=%.1f", len(self.index), time.monotonic() - started)

    def page(
        self, con: queries.Con, terms: tuple[str, ...], after: Hit | None, want: int
    ) -> tuple[list[Hit], dict[Key, TrackRow], dict[str, str | None], int | None]:
        """Up to `want` visible hits after `after`, their rows and authors' handles; and the number of visible
        matches when every match had to be checked anyway (None otherwise)."""
        self._catch_up(con)
        fetch = want + 8  # a few spare: most matches are visible, and each fetched key costs ~0.1 ms
        while True:
            hits, total = self.index.search(terms, after, fetch)
            rows = queries.visible_tracks(con, [(hit.did, hit.rkey) for hit in hits])
            shown = [hit for hit in hits if (hit.did, hit.rkey) in rows][:want]
            if len(shown) == want or len(hits) == total:
                break
            fetch *= 4
        exact = len(rows) if len(hits) == total else None
        return shown, rows, queries.handles(con, [hit.did for hit in shown]), exact

    def _catch_up(self, con: queries.Con) -> None:
        generation = self.store.generation
        if generation == self._generation:
            return
        with self._lock:
            if generation == self._generation:
                return
            self.index.apply(queries.index_rows(con, self.index.watermark - SLACK_US))
            self._generation = generation
