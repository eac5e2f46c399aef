"""GET and HEAD /audio/{key}: the public address of every published file, whichever backend holds it.

Local files are served here with Range support (Starlette's FileResponse). R2 objects are not proxied:
GET redirects to the bucket's public URL, while HEAD answers itself so that existence checks (the
indexer's, a client's) never depend on following a redirect.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from appview_api.audio.storage import CACHE_CONTROL, KEY_RE, AudioStorage, LocalStorage, content_type_for
from appview_api.errors import NotFound, StorageError

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]

# A key's redirect target is stable while the deployment's R2_PUBLIC_URL is, not forever.
REDIRECT_CACHE_CONTROL = "public, max-age=3600"


def audio_route(storage: AudioStorage) -> Route:
    endpoint = _local_endpoint(storage) if isinstance(storage, LocalStorage) else _remote_endpoint(storage)
    return Route("/audio/{key}", endpoint, methods=["GET", "HEAD"], name="audio")


def _headers(key: str) -> dict[str, str]:
    # The key is the content's hash: a stronger validator than FileResponse's mtime-based ETag.
    return {"Cache-Control": CACHE_CONTROL, "ETag": f'"{key.split(".", 1)[0]}"'}


def _not_found(key: str) -> NotFound:
    return NotFound(f"no audio object {key[:80]!r}")


def _local_endpoint(storage: LocalStorage) -> Endpoint:
    async def serve_local(request: Request) -> Response:
        key = request.path_params["key"]
        if not KEY_RE.fullmatch(key):
            raise _not_found(key) from None
        path = storage.path_for(key)
        try:
            stat_result = os.stat(path)
        except FileNotFoundError:
            raise _not_found(key) from None
        return FileResponse(path, media_type=content_type_for(key), headers=_headers(key), stat_result=stat_result)

    return serve_local


def _remote_endpoint(storage: AudioStorage) -> Endpoint:
    async def serve_remote(request: Request) -> Response:
        key = request.path_params["key"]
        if not KEY_RE.fullmatch(key):
            raise _not_found(key) from None
        if request.method == "GET":
            return RedirectResponse(
                storage.public_url(key), status_code=307, headers={"Cache-Control": REDIRECT_CACHE_CONTROL}
            )
        try:
            stored = await storage.stat(key)
        except StorageError as exc:
            log.warning("audio head failed key=%s reason=%s", key, exc.reason)
            raise StorageError("the audio storage is unavailable") from None
        if stored is None:
            raise _not_found(key) from None
        headers = {
            **_headers(key),
            "Content-Type": stored.content_type,
            "Content-Length": str(stored.size),
            "Accept-Ranges": "bytes",
        }
        return Response(headers=headers)

    return serve_remote
