"""Writes to the reference PDS, each returned as the Jetstream event a relay would carry for it: the
streams of the proof, handle and backfill tests are built from the PDS's real commits (rev, cid, record)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.fixtures.pds import LocalPds, PdsAccount
from tests.servers.audio import AudioServer
from tests.servers.events import commit, track_record

TRACK = "app.relay.track"


class Repo:
    """One account's writes to the reference PDS, each returned as the Jetstream event a relay would carry."""

    def __init__(self, pds: LocalPds, account: PdsAccount, audio: AudioServer) -> None:
        self.pds, self.account, self.audio = pds, account, audio

    @property
    def did(self) -> str:
        return self.account.did

    def record(self, title: str) -> dict[str, Any]:
        return track_record(title, "Artist", self.audio.url(f"/audio/{title.replace(' ', '-')}.mp3"))

    def create(self, title: str, rkey: str | None = None) -> dict[str, Any]:
        record = self.record(title)
        body: dict[str, Any] = {"collection": TRACK, "record": record} | ({"rkey": rkey} if rkey else {})
        written = self._write("createRecord", body)
        return commit(
            self.did, written["uri"].rsplit("/", 1)[1], written["commit"]["rev"], "create", record, cid=written["cid"]
        )

    def update(self, rkey: str, title: str) -> dict[str, Any]:
        record = self.record(title)
        written = self._write("putRecord", {"collection": TRACK, "rkey": rkey, "record": record})
        return commit(self.did, rkey, written["commit"]["rev"], "update", record, cid=written["cid"])

    def delete(self, rkey: str) -> dict[str, Any]:
        written = self._write("deleteRecord", {"collection": TRACK, "rkey": rkey})
        return commit(self.did, rkey, written["commit"]["rev"], "delete")

    def rev(self) -> str:
        response = httpx.get(
            f"{self.pds.pds_url}/xrpc/com.atproto.sync.getLatestCommit", params={"did": self.did}, timeout=30
        )
        return str(response.json()["rev"])

    def _write(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(
            f"{self.pds.pds_url}/xrpc/com.atproto.repo.{method}",
            json={"repo": self.did, **body},
            headers=self.account.auth_headers,
            timeout=30,
        )
        response.raise_for_status()
        return dict(response.json())


def rkey_of(event: dict[str, Any]) -> str:
    return str(event["commit"]["rkey"])
