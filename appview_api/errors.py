"""The errors a request can end in, under the project's one root. `xrpc.ERRORS` says how each is answered.

    RelayError (indexer/errors.py)
    └── RequestError
        ├── InvalidRequest        the parameters or body break the method's rules
        ├── MethodNotImplemented  no such XRPC method here
        ├── ActorNotFound         no indexed account by that DID or handle
        ├── TrackNotFound         no visible track at that URI (or none in the author's repo)
        ├── AuthRequired          no token, a forged one, or one its PDS refuses
        │   └── ExpiredToken      the access token has expired
        ├── Forbidden             only a track's owner may change it
        ├── RecordExists          the rkey names a different record already
        ├── InvalidSwap           the record changed meanwhile
        ├── PayloadTooLarge       the body is over its limit
        │   └── QuotaExceeded     the account's stored audio would exceed its quota
        ├── RequestTimeout        the body stopped arriving
        ├── RateLimited           too many writes (carries Retry-After)
        ├── PdsUnavailable        the author's PDS failed or could not be reached
        │   └── PdsBusy           it answered 503
        ├── PdsRejected           it refused the write for a reason of its own
        ├── IdentityUnavailable   the DID document could not be fetched just now
        ├── UnsupportedAudio      the bytes are not a readable mp3, wav, ogg or flac file
        ├── NotFound              no such route or audio object
        ├── SignInFailed          a web sign-in (atproto OAuth) that cannot complete, and why
        └── SignInUnavailable     this deployment cannot sign anyone in (no RELAY_SESSION_SECRET)
    └── StorageError              the audio storage failed or refused an operation

The indexer's own errors reach requests too (StoreUnavailable, StoreError): xrpc.ERRORS answers them.
"""

from __future__ import annotations

from indexer.errors import RelayError


class RequestError(RelayError):
    pass


class InvalidRequest(RequestError):
    pass


class MethodNotImplemented(RequestError):
    pass


class ActorNotFound(RequestError):
    pass


class TrackNotFound(RequestError):
    pass


class AuthRequired(RequestError):
    pass


class ExpiredToken(AuthRequired):
    def __init__(self, reason: str = "the access token has expired: refresh the session") -> None:
        super().__init__(reason)


class Forbidden(RequestError):
    pass


class RecordExists(RequestError):
    pass


class InvalidSwap(RequestError):
    pass


class PayloadTooLarge(RequestError):
    pass


class QuotaExceeded(PayloadTooLarge):
    pass


class RequestTimeout(RequestError):
    pass


class RateLimited(RequestError):
    def __init__(self, retry_after: int, what: str = "writes") -> None:
        super().__init__(f"too many {what}: retry in {retry_after} s")
        self.retry_after = retry_after


class PdsUnavailable(RequestError):
    pass


class PdsBusy(PdsUnavailable):
    pass


class PdsRejected(RequestError):
    pass


class IdentityUnavailable(RequestError):
    pass


class UnsupportedAudio(RequestError):
    pass


class NotFound(RequestError):
    pass


class SignInFailed(RequestError):
    pass


class SignInUnavailable(RequestError):
    pass


class IndexerNotRunning(RequestError):
    """An admin call that needs the indexer, to a process that serves the API only (`serve --no-index`)."""


class StorageError(RelayError):
    pass
