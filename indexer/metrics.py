"""Prometheus metrics shared by the indexer and the API (one process, one registry)."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS_RECEIVED = Counter("relay_events_received_total", "Jetstream events received, by kind.", ["kind"])
EVENTS_APPLIED = Counter(
    "relay_events_applied_total", "Changes committed to the index, by kind of change.", ["kind"]
)
REJECTIONS = Counter("relay_rejections_total", "Frames or records refused at ingest, by reason.", ["reason"])
AUDIO_CHECKS = Counter("relay_audio_checks_total", "Finished audio URL checks, by outcome.", ["outcome"])
INDEXER_LAG = Gauge("relay_indexer_lag_seconds", "Wall clock minus the time_us of the stored cursor.")
RECONNECTS = Counter("relay_jetstream_reconnects_total", "Jetstream reconnects, by reason.", ["reason"])
REQUESTS = Counter("relay_http_requests_total", "API requests, by endpoint and status.", ["endpoint", "status"])
REQUEST_SECONDS = Histogram(
    "relay_http_request_duration_seconds",
    "API request latency, by endpoint.",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
