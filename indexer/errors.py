"""Domain errors, under one root so callers can catch the family. Each carries its reason.

    RelayError
    ├── ConfigError          a setting is missing or malformed
    ├── MalformedEvent       a Jetstream frame that is not a v1 event
    ├── InvalidRecord        an app.relay.track record that breaks the lexicon or our rules
    ├── InvalidCursor        an operator's --cursor value that cannot be read
    ├── UnsafeURL            an outbound URL the SSRF guard refuses (scheme, host, address)
    ├── IdentityError        a DID that cannot be resolved to a document (transient or not)
    └── StoreError           the index failed a read or a write
        └── StoreUnavailable the database cannot be reached at all

The API adds its own request errors under the same root (appview_api/errors.py).
"""


class RelayError(Exception):
    """Root of every error this project raises on purpose."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConfigError(RelayError):
    pass


class MalformedEvent(RelayError):
    pass


class InvalidRecord(RelayError):
    pass


class InvalidCursor(RelayError):
    pass


class UnsafeURL(RelayError):
    pass


class IdentityError(RelayError):
    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


class StoreError(RelayError):
    pass


class StoreUnavailable(StoreError):
    pass
