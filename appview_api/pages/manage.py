"""A person's own tracks: edit (the same record key, a new version of the record) and delete (the record,
then the audio object unless another track uses it). Both go through the publisher with the person's
OAuth session; the publisher itself refuses anyone but the owner.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from appview_api.errors import Forbidden, NotFound, RequestError
from appview_api.pages.browse import Reads
from appview_api.pages.render import shown
from appview_api.pages.web import Viewer, Web
from appview_api.publish.routes import Publishing
from appview_api.read import methods
from appview_api.xrpc import answer
from indexer.atproto.syntax import is_did, is_record_key
from indexer.atproto.uri import record_uri


class ManagePages:
    def __init__(self, web: Web, publishing: Publishing, reads: Reads) -> None:
        self._web = web
        self._publishing = publishing
        self._reads = reads

    def routes(self) -> list[Route]:
        return [
            Route("/track/{did}/{rkey}/edit", self.edit_form, methods=["GET", "HEAD"]),
            Route("/track/{did}/{rkey}/edit", self.edit, methods=["POST"]),
            Route("/track/{did}/{rkey}/delete", self.delete_form, methods=["GET", "HEAD"]),
            Route("/track/{did}/{rkey}/delete", self.delete, methods=["POST"]),
        ]

    async def edit_form(self, request: Request) -> Response:
        _, track = await self._own_track(request)
        fields = {"title": track["title"], "artist": track["artist"], "album": track.get("album", "")}
        return self._edit_page(request, track, fields)

    async def edit(self, request: Request) -> Response:
        viewer, track = await self._own_track(request)
        form = await self._web.form(request)
        fields = {name: form.get(name, "") for name in ("title", "artist", "album")}
        changes: dict[str, Any] = {"uri": track["uri"], **fields, "album": fields["album"] or None}
        try:
            self._publishing.limit(viewer.did)
            await self._publishing.publisher.update(self._web.session(viewer), changes)
        except RequestError as exc:
            return self._edit_page(request, track, fields, exc)
        return RedirectResponse(track["path"], status_code=303)

    async def delete_form(self, request: Request) -> Response:
        _, track = await self._own_track(request)
        return self._web.render.page(request, "delete.html", {"track": track})

    async def delete(self, request: Request) -> Response:
        viewer, track = await self._own_track(request)
        await self._web.form(request)
        self._publishing.limit(viewer.did)
        result = await self._publishing.publisher.delete(self._web.session(viewer), track["uri"])
        context = {"uri": result["uri"], "audio_deleted": result["audioDeleted"]}
        return self._web.render.page(request, "deleted.html", context)

    async def _own_track(self, request: Request) -> tuple[Viewer, dict[str, Any]]:
        viewer = await self._web.signed_in(request)
        did, rkey = request.path_params["did"], request.path_params["rkey"]
        if not is_did(did) or not is_record_key(rkey):
            raise NotFound("there is no track at this address")
        if did != viewer.did:
            raise Forbidden("only the track's owner may change it")
        body = await self._reads.call(methods.TRACK, uri=record_uri(did, rkey))
        return viewer, shown(body["track"])

    def _edit_page(
        self, request: Request, track: dict[str, Any], fields: dict[str, str], error: RequestError | None = None
    ) -> Response:
        context = {"track": track, "fields": fields, "error": None if error is None else error.reason}
        status = 200 if error is None else answer(error)[1]
        return self._web.render.page(request, "edit.html", context, status=status)
