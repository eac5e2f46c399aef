"""Errors on pages are pages: the same table (`xrpc.ERRORS`) decides the status, a template shows it.

One set of exception handlers serves the whole app: a request for a page gets HTML, anything else (XRPC
methods, audio, JSON documents) gets the XRPC JSON handlers' answer, unchanged. A page that needs a
signed-in person sends a browser that has none to sign in, and back.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from appview_api import errors
from appview_api.pages.render import Renderer
from appview_api.xrpc import answer
from indexer.errors import RelayError, StoreUnavailable

log = logging.getLogger(__name__)

Handler = Callable[[Request, Exception], Awaitable[Response]]

NOT_PAGES = ("/xrpc/", "/audio/", "/.well-known/", "/static/", "/metrics", "/oauth-client-metadata.json", "/oauth/jwks")
TITLES = {
    400: "That did not work",
    401: "Sign in first",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "It changed meanwhile",
    413: "Too large",
    429: "Slow down",
    500: "Something broke",
    502: "The PDS did not answer well",
    503: "Unavailable just now",
}
_EXPOSED = (errors.RequestError, errors.StorageError)


def is_page(path: str) -> bool:
    return not path.startswith(NOT_PAGES)


def page_handlers(renderer: Renderer, api: Mapping[type[Exception], Handler]) -> dict[type[Exception], Handler]:
    """`api`'s handlers, wrapped: requests for pages get an HTML error page instead."""

    def wrap(exc_type: type[Exception], api_handler: Handler) -> Handler:
        async def handle(request: Request, exc: Exception) -> Response:
            if not is_page(request.url.path):
                return await api_handler(request, exc)
            return _page(renderer, request, exc)

        return handle

    return {exc_type: wrap(exc_type, handler) for exc_type, handler in api.items()}


def _page(renderer: Renderer, request: Request, exc: Exception) -> Response:
    headers: dict[str, str] = {}
    if isinstance(exc, RelayError):
        status = answer(exc)[1]
        if isinstance(exc, errors.AuthRequired) and request.method in ("GET", "HEAD"):
            return RedirectResponse("/signin?" + urlencode({"return_to": request.url.path}), status_code=303)
        if isinstance(exc, errors.RateLimited):
            headers["Retry-After"] = str(exc.retry_after)
        if isinstance(exc, _EXPOSED):
            message = exc.reason
        elif isinstance(exc, StoreUnavailable):
            message = "the index is unavailable just now: try again in a moment"
        else:
            log.error("page failed path=%s error=%s reason=%s", request.url.path, type(exc).__name__, exc.reason)
            message = "something went wrong on our side"
    elif isinstance(exc, HTTPException):
        status = exc.status_code
        message = "there is no page at this address" if status == 404 else str(exc.detail)
    else:
        status, message = 500, "something went wrong on our side"
    title = TITLES.get(status, "That did not work")
    return renderer.page(request, "error.html", {"title": title, "message": message}, status=status, headers=headers)
