"""Prometheus metrics of the indexer and the API, served by the process that runs them."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS_RECEIVED = Counter("relay_events_received_total", "Jetstream events received, by kind.", ["kind"])
EVENTS_APPLIED = Counter(
    "relay_events_applied_total", "Changes committed to the index, by kind of change.", ["kind"]
)
REJECTIONS = Counter("relay_rejections_total", "Frames or records refused at ingest, by reason.", ["reason"])
AUDIO_CHECKS = Counter("relay_audio_checks_total", "Finished audio URL checks, by outcome.", ["outcome"])
PROOFS = Counter(
    "relay_record_proofs_total", "Records asked of their PDS, by outcome (proven, superseded, forged, unreachable).",
    ["outcome"],
)
HANDLES = Counter("relay_handle_checks_total", "Handles checked against their DID, by outcome.", ["outcome"])
INDEXER_LAG = Gauge("relay_indexer_lag_seconds", "Wall clock minus the time_us of the stored cursor.")
SYNCS = Counter("relay_backfill_syncs_total", "Finished repository syncs, by outcome.", ["outcome"])
SYNCED_RECORDS = Counter("relay_backfill_records_total", "Tracks applied from synced repositories.")
SYNC_STATES = Gauge("relay_backfill_accounts", "Repository syncs asked for in the current round, by state.", ["state"])
WINDOW_GAPS = Counter("relay_jetstream_window_gaps_total", "Connections that began past the host's retained window.")
RECONNECTS = Counter("relay_jetstream_reconnects_total", "Jetstream reconnects, by reason.", ["reason"])
REQUESTS = Counter("relay_http_requests_total", "API requests, by endpoint and status.", ["endpoint", "status"])
REQUEST_SECONDS = Histogram(
    "relay_http_request_duration_seconds",
    "API request latency, by endpoint.",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

# Counted in the feed process, which Prometheus does not scrape: it reports their values, and the
# scraped process adds what they gained since its last report.
FEED_COUNTERS = (EVENTS_RECEIVED, REJECTIONS, RECONNECTS)
CounterValues = dict[tuple[int, tuple[tuple[str, str], ...]], float]


def feed_counter_values() -> CounterValues:
    return {
        (index, tuple(sorted(sample.labels.items()))): sample.value
        for index, counter in enumerate(FEED_COUNTERS)
        for family in counter.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }


class CounterMirror:
    """Carries one feed process's counters into this process's; a new feed process needs a new mirror."""

    def __init__(self) -> None:
        self._seen: CounterValues = {}

    def update(self, values: CounterValues) -> None:
        for key, value in values.items():
            gained = value - self._seen.get(key, 0.0)
            if gained > 0:
                index, labels = key
                FEED_COUNTERS[index].labels(**dict(labels)).inc(gained)
                self._seen[key] = value
