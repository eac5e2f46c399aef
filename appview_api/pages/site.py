"""The web app, assembled: pages, sign-in, upload and the static files, over the API's own parts."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from appview_api.oauth.service import OAuth
from appview_api.pages.browse import Browse, Reads
from appview_api.pages.errors import Handler, page_handlers
from appview_api.pages.manage import ManagePages
from appview_api.pages.render import Renderer
from appview_api.pages.security import Cookies, Csrf, origin_of
from appview_api.pages.signin import SignInPages
from appview_api.pages.staging import Staging
from appview_api.pages.upload import UploadPages
from appview_api.pages.web import Web
from appview_api.publish.routes import Publishing
from appview_api.read.methods import Api
from indexer.config import Settings


class Site:
    def __init__(self, settings: Settings, api: Api, publishing: Publishing, oauth: OAuth) -> None:
        base_url = settings.api.base_url
        cookies = Cookies.for_url(base_url)
        csrf = Csrf(cookies, frozenset({origin_of(base_url)}))
        self.renderer = Renderer(csrf, base_url=base_url, allow_insecure=settings.net.allow_insecure)
        web = Web(oauth, self.renderer, csrf, cookies)
        reads = Reads(api)
        self._staging = Staging()
        self._parts = (
            Browse(web, reads),
            SignInPages(web, settings.web.signin_rate_per_minute),
            UploadPages(web, publishing, self._staging),
            ManagePages(web, publishing, reads),
        )

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = [route for part in self._parts for route in part.routes()]
        routes.append(Mount("/static", StaticFiles(packages=[("appview_api.pages", "static")]), name="static"))
        return routes

    def exception_handlers(self, api: Mapping[type[Exception], Handler]) -> dict[type[Exception], Handler]:
        return page_handlers(self.renderer, api)

    def close(self) -> None:
        self._staging.close()
