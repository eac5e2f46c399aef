"""Tracks that tie on their sort time must cost nothing extra: the catalog with N tracks sharing one
`createdAt` against the same N with distinct times, side by side in one run.

Anyone can write records with one past `createdAt`. Measured in process, on the catalog the API answers
from: a feed page (first and deep), a search matching every track, and removing the newest 10% (deletes
or takedowns) while requests would wait. Last line: one JSON object.

    .venv/bin/python scripts/bench_ties.py --tracks 50000
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from appview_api.read.catalog import Catalog
from indexer.db.rows import TrackRow


def row(i: int, sort_us: int, *, visible: bool = True, changed: int = 1) -> TrackRow:
    return TrackRow(
        f"did:plc:{i % 500:024d}", f"3k{i:011d}", visible, "bafy", f"Song {i} blue", "Artist", None,
        "https://audio.example/x.mp3", "mp3", 10, "2026-01-01T00:00:00Z", 1, sort_us, changed,
    )


def timed(fn: Callable[[], object], repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat


def measure(n: int, tied: bool) -> dict[str, float]:
    catalog = Catalog(b"bench")
    def sort(i: int) -> int:
        return 1_000_000 if tied else 1_000_000 + i

    catalog.apply_tracks([row(i, sort(i)) for i in range(n)])
    first = catalog.feed(None, 51)
    after = catalog.key(first[49])
    removed = [row(i, sort(i), visible=False, changed=2) for i in range(n - n // 10, n)]
    started = time.perf_counter()
    catalog.apply_tracks(removed)
    return {
        "feed_ms": timed(lambda: catalog.feed(None, 51), 200) * 1e3,
        "deep_ms": timed(lambda: catalog.feed(after, 51), 200) * 1e3,
        "search_ms": timed(lambda: catalog.search(("blue",), None, 26), 20) * 1e3,
        "remove_10pct_ms": (time.perf_counter() - started) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=50_000)
    args = parser.parse_args()
    tied, distinct = measure(args.tracks, True), measure(args.tracks, False)
    print(f"{args.tracks} tracks      tied        distinct")
    for name in tied:
        print(f"{name:16} {tied[name]:10.3f}  {distinct[name]:10.3f}")
    print(json.dumps({"tracks": args.tracks, "tied": tied, "distinct": distinct}))


if __name__ == "__main__":
    main()
