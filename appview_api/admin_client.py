"""The CLI's side of the admin API: find the running service, ask it, and show long work's progress.

`relay-appview replay`, `backfill` and `status` first look for a service at RELAY_ADMIN_URL (else
http://RELAY_HOST:RELAY_PORT); only when nothing answers there do they open the database themselves (DuckDB
lets one process hold it, so opening it beside a running `serve` would fail anyway).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from indexer.config import Settings
from indexer.errors import RelayError

log = logging.getLogger("relay_appview")

PROBE_SECONDS = 2.0
POLL_SECONDS = 1.0


class AdminError(RelayError):
    """The running service refused or failed an admin call; `reason` is its XRPC error, for the operator."""


class Service:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self._client = httpx.Client(base_url=url, timeout=30.0, trust_env=False)
        self._token = token

    @classmethod
    def find(cls, settings: Settings) -> Service | None:
        """The running service, if one answers at the admin URL (its health says it is ours)."""
        url = settings.admin_url
        try:
            response = httpx.get(f"{url}/xrpc/_health", timeout=PROBE_SECONDS, trust_env=False)
        except httpx.HTTPError:
            return None
        if "version" not in _json(response):
            return None
        if not settings.admin.token:
            raise AdminError(f"a service is running at {url}; set RELAY_ADMIN_TOKEN (as it has it) to steer it")
        return cls(url, settings.admin.token)

    def close(self) -> None:
        self._client.close()

    def call(self, nsid: str, body: Mapping[str, Any] | None = None, **params: Any) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {self._token}"}
        try:
            if body is None:
                response = self._client.get(f"/xrpc/{nsid}", params=params, headers=headers)
            else:
                response = self._client.post(f"/xrpc/{nsid}", json=dict(body), headers=headers)
        except httpx.HTTPError as exc:
            raise AdminError(f"the service at {self.url} did not answer {nsid}: {type(exc).__name__}") from exc
        answer = _json(response)
        if response.status_code != 200:
            error, message = answer.get("error", response.status_code), answer.get("message", "")
            raise AdminError(f"the service at {self.url} refused {nsid}: {error}: {message}")
        return answer


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


Progress = Callable[[], dict[str, int]]


def follow(progress: Progress, *, tty: bool | None = None, stop_when_done: bool = True) -> dict[str, int]:
    """Show syncs' progress until none is outstanding: a progress bar on a terminal (accounts done of
    total, records, rate, time left), a log line every few seconds otherwise. Returns the last counts."""
    tty = sys.stderr.isatty() if tty is None else tty
    counts = progress()
    if tty:
        return _follow_bar(progress, counts)
    started, last_line = time.monotonic(), 0.0
    while True:
        now = time.monotonic()
        if now - last_line >= 5.0 or _finished(counts):
            rate = counts["done"] / max(now - started, 1e-6)
            log.info(
                "backfill accounts=%d/%d records=%d failed=%d inactive=%d rate=%.1f/s",
                counts["done"], counts["total"], counts["records"], counts["failed"], counts["inactive"], rate,
            )
            last_line = now
        if _finished(counts) and stop_when_done:
            return counts
        time.sleep(POLL_SECONDS)
        counts = progress()


def _follow_bar(progress: Progress, counts: dict[str, int]) -> dict[str, int]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("backfill"), BarColumn(), MofNCompleteColumn(), TextColumn("accounts"),
        TextColumn("{task.fields[records]:,} records"), TextColumn("{task.fields[rate]:.1f}/s"), TimeRemainingColumn(),
    )
    started = time.monotonic()
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("backfill", total=counts["total"], records=counts["records"], rate=0.0)
        while True:
            rate = counts["done"] / max(time.monotonic() - started, 1e-6)
            bar.update(task, total=counts["total"], completed=counts["done"], records=counts["records"], rate=rate)
            if _finished(counts):
                return counts
            time.sleep(POLL_SECONDS)
            counts = progress()


def _finished(counts: Mapping[str, int]) -> bool:
    return counts["pending"] + counts["syncing"] == 0
