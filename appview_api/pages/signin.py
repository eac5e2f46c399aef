"""Sign in and out: `/signin` (the form, then off to the person's authorization server), `/oauth/callback`
(back from it, with a session) and `/signout` (tokens revoked, session gone).

Sign-in attempts are rate-limited per client address: each one costs identity lookups and a PAR request
to someone's server, and must not be a free amplifier.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from appview_api.errors import RateLimited, RequestError
from appview_api.oauth.signin import PENDING_SECONDS
from appview_api.pages.security import SESSION_DAYS, return_path
from appview_api.pages.web import Web
from appview_api.publish.ratelimit import RateLimiter
from appview_api.xrpc import answer


class SignInPages:
    def __init__(self, web: Web, per_minute: int) -> None:
        self._web = web
        self._limiter = RateLimiter(per_minute)

    def routes(self) -> list[Route]:
        return [
            Route("/signin", self.form, methods=["GET", "HEAD"]),
            Route("/signin", self.start, methods=["POST"]),
            Route("/oauth/callback", self.callback, methods=["GET"]),
            Route("/signout", self.sign_out, methods=["POST"]),
        ]

    async def form(self, request: Request) -> Response:
        return_to = return_path(request.query_params.get("return_to"))
        if await self._web.viewer(request) is not None:
            return RedirectResponse(return_to, status_code=303)
        return self._page(request, return_to)

    async def start(self, request: Request) -> Response:
        await self._web.viewer(request)
        fields = await self._web.form(request)
        return_to = return_path(fields.get("return_to"))
        identifier = fields.get("identifier", "")
        retry_after = self._limiter.acquire(request.client.host if request.client else "")
        if retry_after is not None:
            raise RateLimited(retry_after, "sign-in attempts")
        try:
            started = await self._web.oauth.sign_in.begin(identifier, return_to)
        except RequestError as exc:
            return self._page(request, return_to, identifier=identifier, error=exc)
        response = RedirectResponse(started.authorize_url, status_code=303)
        self._web.cookies.set(response, self._web.cookies.signin, started.browser_secret, PENDING_SECONDS)
        return response

    async def callback(self, request: Request) -> Response:
        cookies = self._web.cookies
        session_id, return_to = await self._web.oauth.sign_in.complete(
            dict(request.query_params), request.cookies.get(cookies.signin)
        )
        response = RedirectResponse(return_to, status_code=303)
        cookies.set(response, cookies.session, session_id, SESSION_DAYS * 86400)
        cookies.clear(response, cookies.signin)
        self._web.csrf.rotate(response)
        return response

    async def sign_out(self, request: Request) -> Response:
        viewer = await self._web.viewer(request)
        await self._web.form(request)
        sessions = self._web.oauth.sessions
        if viewer is not None and sessions is not None:
            await sessions.end(viewer.session_id)
        response = RedirectResponse("/", status_code=303)
        self._web.cookies.clear(response, self._web.cookies.session)
        self._web.csrf.rotate(response)
        return response

    def _page(
        self, request: Request, return_to: str, *, identifier: str = "", error: RequestError | None = None
    ) -> Response:
        context = {
            "return_to": return_to,
            "identifier": identifier,
            "error": error.reason if error is not None else None,
            "unavailable": self._web.oauth.unavailable,
        }
        status = answer(error)[1] if error is not None else 200
        return self._web.render.page(request, "signin.html", context, status=status, sign_in_form=True)
