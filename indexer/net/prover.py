"""Asking an account's PDS to prove a record: `com.atproto.sync.getRecord`, checked end to end.

Jetstream v1 is unsigned: whoever runs the host (or stands between it and us) can hand us a record its
author never wrote. The PDS named by the author's DID document answers getRecord with a CAR: the commit
signed by the DID's key, the Merkle path to the record, and the record; `indexer/atproto/proof.py` checks
all of it. This module does the fetching: through the SSRF guard (the PDS address is a stranger's), at most
`MAX_PROOF_BYTES`, capped overall and per PDS host, retrying a PDS that fails or asks us to wait (honouring
`Retry-After`), and fetching the DID document anew once when a signature fails (the key may have rotated).
What the answer means for the index is decided in `indexer/ingest/proofs.py`.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from indexer.atproto.keys import SigningKey, signing_key
from indexer.atproto.nsid import TRACK_COLLECTION
from indexer.atproto.proof import MAX_PROOF_BYTES, Absent, Proven, verify_record
from indexer.atproto.proof_errors import BadSignature, ProofError
from indexer.config import ProofSettings
from indexer.db.rows import ProofJob
from indexer.errors import IdentityError, UnsafeURL
from indexer.net.identity import IdentityResolver
from indexer.net.netguard import check_url
from indexer.slots import KeyedSlots

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_SECONDS = 60.0  # a PDS may ask us to wait; not for longer than this within one job
MAX_WAIT_SECONDS = 3600.0  # nor, from the store, for longer than this


@dataclass(frozen=True, slots=True)
class ProofResult:
    job: ProofJob
    answer: Proven | Absent | None = None  # what the PDS proved
    refused: str | None = None  # the PDS answered with something that proves nothing: forged
    unreachable: str | None = None  # no answer to judge (down, busy, slow): ask again later
    retry_after: float = 0.0  # and not before this many seconds, as the PDS asked (429/503 Retry-After)


class Prover:
    def __init__(
        self,
        settings: ProofSettings,
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
        self._attempts = max(1, settings.retries)
        self._timeout = settings.timeout_seconds
        self._retry_base = retry_base_seconds
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._hosts = KeyedSlots[str](settings.per_host)

    async def prove(self, job: ProofJob) -> ProofResult:
        try:
            return await self._prove(job)
        except IdentityError as exc:
            if exc.transient:
                return ProofResult(job, unreachable=exc.reason)
            return ProofResult(job, refused=f"the account's DID document: {exc.reason}")

    async def _prove(self, job: ProofJob) -> ProofResult:
        identity = await self._identity.resolve(job.did)
        if not identity.pds:
            return ProofResult(job, refused="the account's DID document names no PDS")
        try:
            endpoint = f"{identity.pds.rstrip('/')}/xrpc/com.atproto.sync.getRecord"
            url = check_url(endpoint, allow_insecure=self._allow_insecure)
        except UnsafeURL as exc:
            return ProofResult(job, refused=f"the account's PDS is refused: {exc.reason}")
        params = {"did": job.did, "collection": TRACK_COLLECTION, "rkey": job.rkey}
        unreachable, wait = "no attempt made", 0.0
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(max(self._retry_base * 4 ** (attempt - 1), wait))
            body, unreachable, wait = await self._fetch(url, params)
            if body is not None:
                return await self._judge(job, identity.document, body)
            if wait > MAX_RETRY_AFTER_SECONDS:
                break  # longer than a job waits in hand: the store keeps it until then
        return ProofResult(job, unreachable=unreachable, retry_after=wait)

    async def _fetch(self, url: httpx.URL, params: dict[str, str]) -> tuple[bytes | None, str, float]:
        """The CAR; or why not, and how long the PDS asked us to wait."""
        try:
            async with self._hosts.hold(url.host), self._slots, asyncio.timeout(self._timeout):
                async with self._client.stream("GET", url, params=params) as response:
                    if response.status_code in (429, 503) or response.status_code >= 500:
                        wait = _retry_after(response.headers.get("retry-after"))
                        return None, f"the PDS answered {response.status_code}", wait
                    if response.status_code != 200:
                        return None, f"the PDS answered {response.status_code} to getRecord", 0.0
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body.extend(chunk)
                        if len(body) > MAX_PROOF_BYTES:
                            return bytes(body), "", 0.0  # the CAR reader refuses it, with its reason
                    return bytes(body), "", 0.0
        except UnsafeURL as exc:
            return None, f"the PDS is refused: {exc.reason}", 0.0
        except (TimeoutError, httpx.TimeoutException):
            return None, "the PDS timed out", 0.0
        except httpx.HTTPError as exc:
            return None, f"the PDS is unreachable: {type(exc).__name__}", 0.0

    async def _judge(self, job: ProofJob, document: Mapping[str, Any], car: bytes) -> ProofResult:
        for fresh in (False, True):
            try:
                answer = _verify(car, job, signing_key(document, job.did))
            except BadSignature as exc:
                if fresh:
                    return ProofResult(job, refused=exc.reason)
                document = (await self._identity.resolve(job.did, fresh=True)).document  # a rotated key?
                continue
            except ProofError as exc:
                return ProofResult(job, refused=exc.reason)
            return ProofResult(job, answer=answer)
        raise AssertionError("unreachable: the loop returns")


def _verify(car: bytes, job: ProofJob, key: SigningKey) -> Proven | Absent:
    return verify_record(car, did=job.did, collection=TRACK_COLLECTION, rkey=job.rkey, key=key)


def _retry_after(value: str | None) -> float:
    """Seconds, from either form HTTP allows: a number of seconds or a date."""
    if value is None:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return 0.0
    return min(max(seconds, 0.0), MAX_WAIT_SECONDS)
