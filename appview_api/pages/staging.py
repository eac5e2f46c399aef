"""Uploads waiting for their author to confirm the record shown for them.

The upload page's first post sends the file and the fields; the page answers with the record a dry run
built. The file waits here (moved, not copied, from where the upload was spooled) under a random id until
the author confirms, so the confirmed publish uses exactly those bytes and the rkey minted for the
preview, and so writes exactly the record shown. One upload waits per account (a new preview replaces
the last) and none longer than `ttl` seconds, so waiting files cannot fill the disk.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from appview_api.errors import NotFound
from appview_api.publish.upload import Form

TTL_SECONDS = 1800.0


@dataclass(frozen=True)
class Staged:
    id: str
    did: str
    form: Form
    rkey: str
    at: float


class Staging:
    def __init__(self, ttl: float = TTL_SECONDS) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="relay-staged-"))
        self._ttl = ttl
        self._by_did: dict[str, Staged] = {}

    def stage(self, did: str, form: Form, rkey: str) -> Staged:
        """Take the spooled file over (the spool's own cleanup then finds nothing to remove)."""
        self._sweep()
        self.discard(did)
        staged_id = secrets.token_urlsafe(16)
        path = self._dir / staged_id
        os.replace(form.path, path)
        staged = Staged(staged_id, did, replace(form, path=path), rkey, time.monotonic())
        self._by_did[did] = staged
        return staged

    def get(self, did: str, staged_id: str) -> Staged:
        self._sweep()
        staged = self._by_did.get(did)
        if staged is None or not secrets.compare_digest(staged.id, staged_id):
            raise NotFound("this upload is no longer waiting (it was published, replaced or expired): upload it again")
        return staged

    def discard(self, did: str) -> None:
        staged = self._by_did.pop(did, None)
        if staged is not None:
            staged.form.path.unlink(missing_ok=True)

    def close(self) -> None:
        self._by_did.clear()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _sweep(self) -> None:
        now = time.monotonic()
        for did in [did for did, staged in self._by_did.items() if now - staged.at > self._ttl]:
            self.discard(did)
