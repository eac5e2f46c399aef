"""Publishing from the browser, with the record shown before anything is written.

`/upload` takes the file and the fields; the publisher's own dry run builds the record under a freshly
minted TID, and the page shows that exact JSON. Only `/upload/confirm` writes, through the same
publisher (and the same guarantees: stored audio, a create-only putRecord, nothing half-done on
failure) with the person's DPoP-bound OAuth session, the staged bytes and that rkey: so what is written
is what was shown. A failed confirm shows the preview again, to retry the very same record.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from appview_api.errors import (
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
    RequestError,
    RequestTimeout,
    UnsupportedAudio,
)
from appview_api.pages.render import track_path
from appview_api.pages.security import CSRF_FIELD
from appview_api.pages.staging import Staged, Staging
from appview_api.pages.web import Viewer, Web
from appview_api.publish.routes import Publishing
from appview_api.publish.upload import TEXT_FIELDS
from appview_api.xrpc import answer
from indexer.atproto import tid
from indexer.atproto.nsid import TRACK_COLLECTION
from indexer.atproto.uri import parse_record_uri

FORM_FIELDS = TEXT_FIELDS | {CSRF_FIELD}


class UploadPages:
    def __init__(self, web: Web, publishing: Publishing, staging: Staging) -> None:
        self._web = web
        self._publishing = publishing
        self._staging = staging
        self._clock = tid.TidClock()

    def routes(self) -> list[Route]:
        return [
            Route("/upload", self.form, methods=["GET", "HEAD"]),
            Route("/upload", self.preview, methods=["POST"]),
            Route("/upload/confirm", self.confirm, methods=["POST"]),
        ]

    async def form(self, request: Request) -> Response:
        if await self._web.viewer(request) is None:
            return RedirectResponse("/signin?return_to=/upload", status_code=303)
        return self._form(request, {})

    async def preview(self, request: Request) -> Response:
        viewer = await self._web.signed_in(request)
        self._web.csrf.check_origin(request)  # before a byte of the upload is read
        try:
            async with self._publishing.receive(request, viewer.did, FORM_FIELDS) as form:
                self._web.csrf.check(request, form.fields.pop(CSRF_FIELD, None))
                try:
                    self._publishing.limit(viewer.did)
                    rkey = self._clock.next()
                    dry = await self._publishing.publisher.publish(
                        self._web.session(viewer), form, rkey=rkey, dry_run=True
                    )
                except RequestError as exc:
                    return self._form(request, form.fields, exc)
                staged = self._staging.stage(viewer.did, form, rkey)
        except (UnsupportedAudio, PayloadTooLarge, InvalidRequest, RequestTimeout, RateLimited) as exc:
            return self._form(request, {}, exc)  # refused while it streamed in: the typed fields are gone too
        return self._preview(request, viewer, staged, dry)

    async def confirm(self, request: Request) -> Response:
        viewer = await self._web.signed_in(request)
        fields = await self._web.form(request)
        staged = self._staging.get(viewer.did, fields.get("staged", ""))
        session = self._web.session(viewer)
        try:
            self._publishing.limit(viewer.did)
            written = await self._publishing.publisher.publish(session, staged.form, rkey=staged.rkey, dry_run=False)
        except RequestError as exc:
            dry = await self._publishing.publisher.publish(session, staged.form, rkey=staged.rkey, dry_run=True)
            return self._preview(request, viewer, staged, dry, exc)
        self._staging.discard(viewer.did)
        parsed = parse_record_uri(written["uri"])
        assert parsed is not None  # the PDS wrote it where we asked
        pds_record = f"{viewer.pds_url.rstrip('/')}/xrpc/com.atproto.repo.getRecord?" + urllib.parse.urlencode(
            {"repo": viewer.did, "collection": TRACK_COLLECTION, "rkey": parsed.rkey}
        )
        context = {
            "uri": written["uri"],
            "cid": written["cid"],
            "record_json": _json(written["record"]),
            "pds_record_url": pds_record,
            "track_path": track_path(viewer.did, parsed.rkey),
        }
        return self._web.render.page(request, "published.html", context)

    def _form(self, request: Request, fields: dict[str, str], error: RequestError | None = None) -> Response:
        values = {name: fields.get(name, "") for name in ("title", "artist", "album")}
        context = {"fields": values, "error": None if error is None else error.reason}
        status = 200 if error is None else answer(error)[1]
        return self._web.render.page(request, "upload.html", context, status=status)

    def _preview(
        self, request: Request, viewer: Viewer, staged: Staged, dry: dict[str, Any], error: RequestError | None = None
    ) -> Response:
        context = {
            "uri": dry["uri"],
            "record": dry["record"],
            "record_json": _json(dry["record"]),
            "pds_url": viewer.pds_url,
            "size": staged.form.size,
            "staged": staged.id,
            "error": None if error is None else error.reason,
        }
        status = 200 if error is None else answer(error)[1]
        return self._web.render.page(request, "preview.html", context, status=status)


def _json(record: dict[str, Any]) -> str:
    return orjson.dumps(record, option=orjson.OPT_INDENT_2).decode()
