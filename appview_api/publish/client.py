"""`relay-appview publish`: sign in with a handle and app password, then upload through this service.

The session comes from the account's own PDS (com.atproto.server.createSession): the one named by
RELAY_PDS_URL when set, otherwise the PDS in the DID document the handle resolves to (atproto's resolver:
DNS or https://<handle>/.well-known/atproto-did, then the PLC directory at RELAY_PLC_URL). Its access
token then authorises the publish call to RELAY_PUBLIC_URL (or http://RELAY_HOST:RELAY_PORT), and the file
is streamed from disk, never read whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from atproto import AsyncIdResolver

from indexer.config import Settings
from indexer.errors import ConfigError, RelayError

PUBLISH_TIMEOUT = httpx.Timeout(600.0, connect=10.0)


class PublishFailed(RelayError):
    """Signing in or publishing failed; the reason names the step and the server's error."""


async def pds_for_handle(settings: Settings) -> str:
    resolver = AsyncIdResolver(plc_url=settings.identity.plc_url)
    did = await resolver.handle.resolve(settings.publish.handle)
    if did is None:
        raise PublishFailed(f"the handle {settings.publish.handle} does not resolve to a DID")
    document = await resolver.did.resolve(did)
    pds = document.get_pds_endpoint() if document is not None else None
    if not pds:
        raise PublishFailed(f"the DID document of {settings.publish.handle} ({did}) names no PDS")
    return pds


async def sign_in(settings: Settings, client: httpx.AsyncClient) -> str:
    """An access token for RELAY_HANDLE (app passwords are meant for exactly this)."""
    if not settings.publish.handle or not settings.publish.app_password:
        raise ConfigError("publish needs RELAY_HANDLE and RELAY_APP_PASSWORD")
    pds = settings.publish.pds_url or await pds_for_handle(settings)
    body = {"identifier": settings.publish.handle, "password": settings.publish.app_password}
    url = f"{pds.rstrip('/')}/xrpc/com.atproto.server.createSession"
    session = _answer(await _post(client, url, json=body), "sign-in")
    return str(session["accessJwt"])


async def publish_file(
    settings: Settings, path: Path, *, title: str, artist: str, album: str | None = None, dry_run: bool = False
) -> dict[str, Any]:
    if not path.is_file():
        raise PublishFailed(f"{path}: no such file")
    async with httpx.AsyncClient(timeout=PUBLISH_TIMEOUT, trust_env=False) as client:
        token = await sign_in(settings, client)
        fields = {"title": title, "artist": artist} | ({"album": album} if album else {})
        with path.open("rb") as file:
            response = await _post(
                client,
                f"{settings.api.base_url}/xrpc/app.relay.track.publish",
                params={"dryRun": "true"} if dry_run else None,
                data=fields,
                files={"audio": (path.name, file)},
                headers={"Authorization": f"Bearer {token}"},
            )
        return _answer(response, "publish")


async def _post(client: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    try:
        return await client.post(url, **kwargs)
    except httpx.HTTPError as exc:
        raise PublishFailed(f"{url.split('/xrpc/')[0]} is unreachable: {type(exc).__name__}") from None


def _answer(response: httpx.Response, step: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 200 and isinstance(body, dict):
        return body
    if isinstance(body, dict) and "error" in body:
        raise PublishFailed(f"{step} failed: {body['error']}: {body.get('message', '')}")
    raise PublishFailed(f"{step} failed: HTTP {response.status_code}")
