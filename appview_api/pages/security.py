"""What keeps the pages safe by default: cookies, CSRF, the Content-Security-Policy, return paths.

- Cookies are HttpOnly and SameSite=Lax; on https they are Secure and `__Host-` prefixed (no sibling
  subdomain can plant one).
- Every form post must come from this site: a browser's `Sec-Fetch-Site` or `Origin` saying otherwise is
  refused before the body is read, and the form must carry the token this browser holds in its CSRF
  cookie (double submit), so a post with neither header still needs a secret the attacker cannot read.
- The CSP allows scripts and styles from this origin only (no inline script anywhere), media from https
  (tracks' audio lives on any host), and no framing. Forms may post only here, except the sign-in form,
  whose answer redirects to the person's own authorization server, wherever that is.
- A return path after sign-in must be a path on this site: never a scheme, a host, or `//`.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import Response

from appview_api.errors import Forbidden, InvalidRequest

CSRF_FIELD = "csrf"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,64}")
_SAME_SITE = frozenset({"same-origin", "none"})  # none: typed in the address bar, a bookmark
MAX_RETURN_PATH = 2048
_RETURN_PATH = re.compile(r"/(?![/\\])[^\\\s\x00-\x1f\x7f]*")
SESSION_DAYS = 30


@dataclass(frozen=True)
class Cookies:
    secure: bool
    session: str
    csrf: str
    signin: str

    @classmethod
    def for_url(cls, base_url: str) -> Cookies:
        secure = httpx.URL(base_url).scheme == "https"
        prefix = "__Host-" if secure else ""
        return cls(secure, f"{prefix}relay_session", f"{prefix}relay_csrf", f"{prefix}relay_signin")

    def set(self, response: Response, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path="/", secure=self.secure, httponly=True, samesite="lax"
        )

    def clear(self, response: Response, name: str) -> None:
        response.delete_cookie(name, path="/", secure=self.secure, httponly=True, samesite="lax")


class Csrf:
    """The browser's CSRF token: read from its cookie, or minted for this response (then set by `finish`)."""

    def __init__(self, cookies: Cookies, origins: frozenset[str]) -> None:
        self._cookies = cookies
        self._origins = origins

    def token(self, request: Request) -> str:
        minted: str | None = getattr(request.state, "csrf_minted", None)
        if minted is not None:
            return minted
        held = request.cookies.get(self._cookies.csrf, "")
        if _TOKEN.fullmatch(held):
            return held
        request.state.csrf_minted = secrets.token_urlsafe(32)
        return str(request.state.csrf_minted)

    def finish(self, request: Request, response: Response) -> None:
        minted = getattr(request.state, "csrf_minted", None)
        if minted is not None:
            self._cookies.set(response, self._cookies.csrf, minted, None)

    def rotate(self, response: Response) -> None:
        """A new token at sign-in and sign-out: a token seen before then is worth nothing after."""
        self._cookies.set(response, self._cookies.csrf, secrets.token_urlsafe(32), None)

    def check_origin(self, request: Request) -> None:
        """Refuse a post a browser says came from another site; call before reading the body."""
        site = request.headers.get("sec-fetch-site")
        origin = request.headers.get("origin")
        if site is not None and site not in _SAME_SITE:
            raise Forbidden("cross-site form posts are refused")
        if origin is not None and origin not in self._origins and origin != _own_origin(request):
            raise Forbidden("cross-site form posts are refused")

    def check(self, request: Request, submitted: str | None) -> None:
        self.check_origin(request)
        held = request.cookies.get(self._cookies.csrf, "")
        if not submitted or not _TOKEN.fullmatch(held) or not hmac.compare_digest(submitted.encode(), held.encode()):
            raise Forbidden("this form has expired or did not come from this site: reload the page and try again")


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def origin_of(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}"


def return_path(value: str | None) -> str:
    """A path on this site to come back to after sign-in; anything else is refused, not rewritten."""
    if value is None or value == "":
        return "/"
    parts = urlsplit(value)
    if len(value) > MAX_RETURN_PATH or not _RETURN_PATH.fullmatch(value) or parts.scheme or parts.netloc:
        raise InvalidRequest("the return path must be a path on this site")
    return value


def content_security_policy(*, allow_insecure: bool, sign_in: bool) -> str:
    media = "'self' https:" + (" http:" if allow_insecure else "")
    forms = "'self'" + ((" https:" + (" http:" if allow_insecure else "")) if sign_in else "")
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"media-src {media}",
            "connect-src 'self'",
            f"form-action {forms}",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        )
    )


def security_headers(csp: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-cache",
    }
