"""What every page handler shares: who is looking (the viewer), the renderer, CSRF, and small forms."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.requests import Request

from appview_api.errors import AuthRequired, InvalidRequest, PayloadTooLarge
from appview_api.oauth.service import OAuth
from appview_api.pages.render import Renderer
from appview_api.pages.security import Cookies, Csrf
from appview_api.publish.pds import Session

MAX_FORM_BYTES = 16 * 1024  # the pages' plain forms hold a few short fields


@dataclass(frozen=True)
class Viewer:
    session_id: str
    did: str
    handle: str | None
    pds_url: str

    @property
    def name(self) -> str:
        return f"@{self.handle}" if self.handle else self.did

    @property
    def profile_path(self) -> str:
        return f"/profile/{self.handle or self.did}"


class Web:
    def __init__(self, oauth: OAuth, renderer: Renderer, csrf: Csrf, cookies: Cookies) -> None:
        self.oauth = oauth
        self.render = renderer
        self.csrf = csrf
        self.cookies = cookies

    async def viewer(self, request: Request) -> Viewer | None:
        """The signed-in person, if any; also handed to templates (through request.state)."""
        viewer: Viewer | None = None
        session_id = request.cookies.get(self.cookies.session)
        sessions = self.oauth.sessions
        if session_id and sessions is not None:
            session = await sessions.get(session_id)
            if session is not None:
                viewer = Viewer(session_id, session.did, session.handle, session.pds_url)
        request.state.viewer = viewer
        return viewer

    async def signed_in(self, request: Request) -> Viewer:
        viewer = await self.viewer(request)
        if viewer is None:
            raise AuthRequired("sign in first")
        return viewer

    def session(self, viewer: Viewer) -> Session:
        """The viewer's authority over their own repository, for the publisher."""
        sessions = self.oauth.sessions
        if sessions is None:
            raise AuthRequired("sign in first")
        return Session(viewer.did, viewer.handle, viewer.pds_url, sessions.credentials(viewer.session_id))

    async def form(self, request: Request) -> dict[str, str]:
        """A small urlencoded form, CSRF-checked (its origin before the body is read, then its token)."""
        self.csrf.check_origin(request)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            raise InvalidRequest("the form must be sent as application/x-www-form-urlencoded")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > MAX_FORM_BYTES:
                raise PayloadTooLarge(f"the form is larger than {MAX_FORM_BYTES} bytes")
        try:
            fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20))
        except (UnicodeDecodeError, ValueError):
            raise InvalidRequest("the form is not valid urlencoded UTF-8") from None
        self.csrf.check(request, fields.get("csrf"))
        return fields
