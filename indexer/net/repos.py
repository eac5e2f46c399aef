"""Fetching an account's whole repository from its PDS: `com.atproto.sync.getRepo`, proven end to end.

Like a record proof (`prover.py`) and with the same checks (`indexer/atproto/proof.py`): the PDS named by
the DID document, reached through the SSRF guard; every block's hash; the commit signed by the DID's key
(the document fetched anew once when the signature fails: the key may have rotated); the tree walked for
the tracks. The body is read as a stream and refused as soon as it crosses the byte cap, and only the
blocks the walk can need are held (`repo_blocks`): a repository of 10,000 posts and 50 tracks costs the
memory of its tree and its tracks.

What the answer means for the index is decided in `indexer/ingest/backfill.py`; this module only says
what happened: the repository (`Fetched`), a PDS that refuses it for the account's status (`Refused`), or
no usable answer (`Unreachable`: down, busy, slow, or something that proves nothing).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from indexer.atproto.car import Car, read_car
from indexer.atproto.keys import signing_key
from indexer.atproto.nsid import TRACK_COLLECTION
from indexer.atproto.proof import VerifiedRepo, repo_blocks, verify_repo
from indexer.atproto.proof_errors import BadSignature, ProofError
from indexer.config import BackfillSettings
from indexer.errors import IdentityError, UnsafeURL
from indexer.net.identity import IdentityResolver
from indexer.net.netguard import check_url
from indexer.net.prover import MAX_RETRY_AFTER_SECONDS, _retry_after
from indexer.slots import KeyedSlots

log = logging.getLogger(__name__)

# getRepo's errors for a repository its PDS will not serve, and the account status each means.
INACTIVE_ERRORS = {
    "RepoTakendown": "takendown",
    "RepoSuspended": "suspended",
    "RepoDeactivated": "deactivated",
    "RepoNotFound": "deleted",
}
MAX_ERROR_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Fetched:
    repo: VerifiedRepo
    size: int  # bytes of the CAR as streamed


@dataclass(frozen=True, slots=True)
class Refused:
    status: str  # takendown, suspended, deactivated, deleted
    reason: str


@dataclass(frozen=True, slots=True)
class Unreachable:
    reason: str
    retry_after: float = 0.0  # seconds the PDS asked us to wait (429/503 Retry-After)
    proves_nothing: bool = False  # it answered, with a repository that fails its proof


RepoAnswer = Fetched | Refused | Unreachable


class RepoFetcher:
    def __init__(
        self,
        settings: BackfillSettings,
        identity: IdentityResolver,
        client: httpx.AsyncClient,
        *,
        allow_insecure: bool,
        retry_base_seconds: float = 1.0,
    ) -> None:
        """`client` must dial through the SSRF guard."""
        self._identity = identity
        self._client = client
        self._allow_insecure = allow_insecure
        self._settings = settings
        self._attempts = max(1, settings.retries)
        self._retry_base = retry_base_seconds
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._hosts = KeyedSlots[str](settings.per_host)

    async def fetch(self, did: str) -> RepoAnswer:
        try:
            identity = await self._identity.resolve(did)
        except IdentityError as exc:
            return Unreachable(f"the account's DID document: {exc.reason}", proves_nothing=not exc.transient)
        if not identity.pds:
            return Unreachable("the account's DID document names no PDS", proves_nothing=True)
        try:
            url = check_url(
                f"{identity.pds.rstrip('/')}/xrpc/com.atproto.sync.getRepo", allow_insecure=self._allow_insecure
            )
        except UnsafeURL as exc:
            return Unreachable(f"the account's PDS is refused: {exc.reason}", proves_nothing=True)
        answer: RepoAnswer = Unreachable("no attempt made")
        for attempt in range(self._attempts):
            if attempt:
                wait = answer.retry_after if isinstance(answer, Unreachable) else 0.0
                await asyncio.sleep(max(self._retry_base * 4 ** (attempt - 1), wait))
            answer = await self._fetch(url, did, identity.document)
            if not isinstance(answer, Unreachable) or answer.proves_nothing:
                return answer
            if answer.retry_after > MAX_RETRY_AFTER_SECONDS:
                break  # longer than a sync waits in hand: the store keeps it until then
        return answer

    async def _fetch(self, url: httpx.URL, did: str, document: Mapping[str, Any]) -> RepoAnswer:
        settings = self._settings
        try:
            async with self._hosts.hold(url.host), self._slots, asyncio.timeout(settings.timeout_seconds):
                timeout = httpx.Timeout(min(settings.timeout_seconds, 60.0))
                async with self._client.stream("GET", url, params={"did": did}, timeout=timeout) as response:
                    if response.status_code != 200:
                        return await _refusal(response)
                    car = await read_car(
                        response.aiter_bytes(), max_bytes=settings.max_repo_bytes, keep=repo_blocks(TRACK_COLLECTION)
                    )
        except ProofError as exc:  # while reading: a malformed CAR, a block that fails its hash, over the cap
            return Unreachable(f"the PDS's repository: {exc.reason}", proves_nothing=True)
        except UnsafeURL as exc:
            return Unreachable(f"the PDS is refused: {exc.reason}", proves_nothing=True)
        except (TimeoutError, httpx.TimeoutException):
            return Unreachable("the PDS timed out")
        except httpx.HTTPError as exc:
            return Unreachable(f"the PDS is unreachable: {type(exc).__name__}")
        return await self._verify(car, did, document)

    async def _verify(self, car: Car, did: str, document: Mapping[str, Any]) -> RepoAnswer:
        for fresh in (False, True):
            try:
                started = time.perf_counter()
                repo = verify_repo(car, did=did, key=signing_key(document, did))
                log.debug(
                    "repo verified did=%s records=%d ms=%.1f",
                    did,
                    len(repo.records),
                    (time.perf_counter() - started) * 1e3,
                )
                return Fetched(repo, car.size)
            except BadSignature as exc:
                if fresh:
                    return Unreachable(exc.reason, proves_nothing=True)
                try:
                    document = (await self._identity.resolve(did, fresh=True)).document  # a rotated key?
                except IdentityError as err:
                    return Unreachable(f"the account's DID document: {err.reason}", proves_nothing=not err.transient)
            except ProofError as exc:
                return Unreachable(exc.reason, proves_nothing=True)
        raise AssertionError("unreachable: the loop returns")


async def _refusal(response: httpx.Response) -> RepoAnswer:
    """A non-200 answer: an account status the PDS names, or a reason to try again later."""
    status = response.status_code
    if status == 429 or status >= 500:
        return Unreachable(f"the PDS answered {status}", _retry_after(response.headers.get("retry-after")))
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) > MAX_ERROR_BYTES:
            break
    try:
        error = orjson.loads(bytes(body)).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        error = None
    if isinstance(error, str) and error in INACTIVE_ERRORS:
        return Refused(INACTIVE_ERRORS[error], f"the PDS answered {error}")
    return Unreachable(f"the PDS answered {status} to getRepo", proves_nothing=True)
