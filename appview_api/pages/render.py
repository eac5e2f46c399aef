"""Templates (Starlette's Jinja2, autoescaping every value: a record's `<script>` shows as text) and the
headers every page carries.

Tracks come to the templates as the XRPC API's own track views (the same read model), with the few
things a page needs beside them (its page path, the author's profile path) derived here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from appview_api.pages.security import Csrf, content_security_policy, security_headers
from indexer.atproto.uri import parse_record_uri

SITE_NAME = "relay"
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}(T|$)")


def duration(seconds: object) -> str:
    if not isinstance(seconds, int) or seconds < 0:
        return ""
    return f"{seconds // 60}:{seconds % 60:02d}"


def day(iso: object) -> str:
    """The date part of a record's datetime (validated ISO 8601 by the indexer), as the author wrote it."""
    if not isinstance(iso, str) or not _DAY.match(iso):
        return ""
    return iso[:10]


def track_path(did: str, rkey: str) -> str:
    return f"/track/{did}/{rkey}"


def profile_path(author: Mapping[str, Any]) -> str:
    return f"/profile/{author.get('handle') or author['did']}"


def shown(view: dict[str, Any]) -> dict[str, Any]:
    """A track view as templates use it: the view (its optional fields None when absent), its page paths."""
    parsed = parse_record_uri(view["uri"])
    assert parsed is not None  # views come from the catalog, whose URIs are well formed
    return {"album": None, "duration": None} | view | {
        "did": parsed.authority,
        "rkey": parsed.rkey,
        "path": track_path(parsed.authority, parsed.rkey),
        "author_path": profile_path(view["author"]),
        "author_name": "@" + view["author"]["handle"] if view["author"].get("handle") else view["author"]["did"],
    }


class Renderer:
    def __init__(self, csrf: Csrf, *, base_url: str, allow_insecure: bool) -> None:
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("appview_api.pages", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters["duration"] = duration
        env.filters["day"] = day
        self.templates = Jinja2Templates(env=env)
        self._csrf = csrf
        self._base_url = base_url
        self._headers = security_headers(content_security_policy(allow_insecure=allow_insecure, sign_in=False))
        self._sign_in_headers = security_headers(content_security_policy(allow_insecure=allow_insecure, sign_in=True))

    def fragment(self, name: str, **context: Any) -> str:
        """A part of a page on its own (cached by callers: it must hold nothing of the viewer)."""
        return self.templates.get_template(name).render(**context)

    def page(
        self,
        request: Request,
        name: str,
        context: Mapping[str, Any],
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        sign_in_form: bool = False,
    ) -> Response:
        values = {
            "site": SITE_NAME,
            "base_url": self._base_url,
            "viewer": getattr(request.state, "viewer", None),
            "csrf": lambda: self._csrf.token(request),
            "path": request.url.path,
            **context,
        }
        base = self._sign_in_headers if sign_in_form else self._headers
        response = self.templates.TemplateResponse(
            request, name, values, status_code=status, headers={**base, **(headers or {})}
        )
        self._csrf.finish(request, response)
        return response
