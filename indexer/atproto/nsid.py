"""The NSIDs this service indexes and serves."""

TRACK_COLLECTION = "app.relay.track"
