"""Domain errors, one root so callers can catch the family.

    RelayError
    ├── ConfigError          a setting is missing or malformed
    ├── MalformedEvent       a Jetstream frame that is not a v1 event
    ├── InvalidRecord        an app.relay.track record that breaks the lexicon or our rules
    ├── InvalidCursor        an operator's --cursor value that cannot be read
    ├── UnsafeURL            an audio URL the SSRF guard refuses (scheme, host, address)
    └── IdentityError        a DID that cannot be resolved to a document
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
