"""Small JSON documents from servers named by strangers (PDSes, authorization servers, handle hosts).

Every request goes through the SSRF-guarded client the caller holds, and a body is read only up to a
limit: a metadata document is a few kilobytes, and a hostile server must not make us buffer gigabytes.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from appview_api.errors import PdsUnavailable, SignInFailed
from indexer.errors import UnsafeURL
from indexer.net.netguard import check_url

MAX_DOCUMENT_BYTES = 64 * 1024


def checked_url(url: str, what: str, *, allow_insecure: bool) -> str:
    """`url` if the SSRF policy allows it (https only, unless insecure for development), else SignInFailed."""
    try:
        check_url(url, allow_insecure=allow_insecure)
    except UnsafeURL as exc:
        raise SignInFailed(f"{what} {url[:200]!r} is refused: {exc.reason}") from None
    return url


async def get_text(http: httpx.AsyncClient, url: str, what: str) -> tuple[int, str]:
    """(status, body) of a GET, the body cut off at MAX_DOCUMENT_BYTES; PdsUnavailable if none came."""
    try:
        async with http.stream("GET", url, headers={"Accept": "application/json"}) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise SignInFailed(f"{what} at {url[:200]} is larger than {MAX_DOCUMENT_BYTES} bytes")
            return response.status_code, body.decode("utf-8", "replace")
    except UnsafeURL as exc:
        raise SignInFailed(f"{what} at {url[:200]} is refused: {exc.reason}") from None
    except httpx.HTTPError as exc:
        raise PdsUnavailable(f"{what} at {url[:200]} is unreachable: {type(exc).__name__}") from None


async def get_json(http: httpx.AsyncClient, url: str, what: str) -> dict[str, Any]:
    status, text = await get_text(http, url, what)
    if status != 200:
        raise SignInFailed(f"{what} at {url[:200]} answered HTTP {status}")
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        raise SignInFailed(f"{what} at {url[:200]} is not a JSON object")
    return document
