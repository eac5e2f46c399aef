"""atproto primitives: NSIDs, AT-URIs, TIDs, datetimes, lexicons and record validation."""
