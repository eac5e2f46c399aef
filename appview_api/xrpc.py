"""XRPC plumbing: the one table from domain errors to XRPC errors, the one handler that renders them, and
query parameters parsed as the method's lexicon declares them.

Query strings carry only text, so each value is first coerced to the type the lexicon gives its parameter,
then the whole set goes through lexrpc, which checks required names, bounds, lengths and formats and refuses
unknown names. Nothing here knows a particular method: the lexicon JSON is the single source of truth.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from lexrpc.base import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from appview_api import errors
from indexer.atproto import lexicons
from indexer.errors import ConfigError, RelayError, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

_INTEGER = re.compile(r"-?[0-9]{1,18}")  # int() would also take "1_0", " 7" and non-ASCII digits
_SCALARS = frozenset({"string", "integer", "boolean"})

# Domain error → (XRPC error name, HTTP status). A class not listed is answered as its nearest listed base.
ERRORS: dict[type[RelayError], tuple[str, int]] = {
    errors.InvalidRequest: ("InvalidRequest", 400),
    errors.MethodNotImplemented: ("MethodNotImplemented", 501),
    errors.ActorNotFound: ("ActorNotFound", 400),
    errors.TrackNotFound: ("TrackNotFound", 404),
    errors.AuthRequired: ("AuthRequired", 401),
    errors.ExpiredToken: ("ExpiredToken", 401),
    errors.Forbidden: ("Forbidden", 403),
    errors.RecordExists: ("RecordExists", 409),
    errors.InvalidSwap: ("InvalidSwap", 409),
    errors.PayloadTooLarge: ("PayloadTooLarge", 413),
    errors.QuotaExceeded: ("QuotaExceeded", 413),
    errors.RequestTimeout: ("RequestTimeout", 408),
    errors.RateLimited: ("RateLimitExceeded", 429),
    errors.PdsUnavailable: ("PdsUnavailable", 502),
    errors.PdsBusy: ("PdsUnavailable", 503),
    errors.PdsRejected: ("PdsRejected", 502),
    errors.IdentityUnavailable: ("IdentityUnavailable", 503),
    errors.UnsupportedAudio: ("UnsupportedAudio", 400),
    errors.NotFound: ("NotFound", 404),
    errors.SignInFailed: ("SignInFailed", 400),
    errors.SignInUnavailable: ("SignInUnavailable", 503),
    errors.StorageError: ("StorageUnavailable", 503),
    errors.IndexerNotRunning: ("IndexerNotRunning", 409),
    StoreUnavailable: ("DatabaseUnavailable", 503),
    StoreError: ("InternalServerError", 500),
}
MAX_JSON_BYTES = 64 * 1024  # a procedure's JSON body
_HTTP_NAMES = {404: "NotFound", 405: "MethodNotAllowed"}
_EXPOSED = (errors.RequestError, errors.StorageError)  # their reasons are written for the client


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def error_response(name: str, message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
    return json_response({"error": name, "message": message}, status, headers)


def answer(exc: RelayError) -> tuple[str, int]:
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            return ERRORS[cls]
    return "InternalServerError", 500


async def handle_relay_error(request: Request, exc: Exception) -> Response:
    """Every route's domain errors, as XRPC JSON; what the client may not see is logged here instead."""
    assert isinstance(exc, RelayError)
    name, status = answer(exc)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, errors.RateLimited) else None
    if isinstance(exc, _EXPOSED):
        return error_response(name, exc.reason, status, headers)
    if isinstance(exc, StoreUnavailable):
        log.warning("database unavailable path=%s reason=%s", request.url.path, exc.reason)
        return error_response(name, "the index is unavailable", status)
    log.error("request failed path=%s error=%s reason=%s", request.url.path, type(exc).__name__, exc.reason)
    return error_response(name, "internal error", status)


async def handle_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no route, wrong method) in the same shape."""
    assert isinstance(exc, HTTPException)
    name = _HTTP_NAMES.get(exc.status_code, "InvalidRequest")
    return error_response(name, str(exc.detail), exc.status_code, exc.headers)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """A bug: the client sees no internals; uvicorn logs the traceback once, as the exception leaves."""
    return error_response("InternalServerError", "internal error", 500)


EXCEPTION_HANDLERS = {RelayError: handle_relay_error, HTTPException: handle_http_error, Exception: handle_unexpected}


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: str
    array: bool
    default: Any


@dataclass(frozen=True)
class Method:
    """A method's query parameters as its lexicon declares them."""

    nsid: str
    params: Mapping[str, Param]

    def parse(self, query: Iterable[tuple[str, str]]) -> dict[str, Any]:
        """Typed, validated parameters with the lexicon's defaults filled in; InvalidRequest otherwise."""
        values: dict[str, Any] = {}
        for name, raw in query:
            param = self.params.get(name)
            if param is None:
                raise errors.InvalidRequest(f"unknown parameter {name[:50]!r}")
            value = _coerce(param, raw)
            if param.array:
                values.setdefault(name, []).append(value)
            elif name in values:
                raise errors.InvalidRequest(f"parameter {name!r} given more than once")
            else:
                values[name] = value
        try:
            lexicons.validator().validate(self.nsid, "parameters", values)
        except ValidationError as exc:
            raise errors.InvalidRequest(str(exc)) from None
        for param in self.params.values():
            if param.default is not None:
                values.setdefault(param.name, param.default)
        return values


def method(nsid: str) -> Method:
    """Read a method's lexicon; a parameter type we cannot carry in a query string is a ConfigError."""
    definition = lexicons.main_def(nsid)
    if definition.get("type") not in ("query", "procedure"):
        raise ConfigError(f"{nsid}: not a query or procedure lexicon")
    params: dict[str, Param] = {}
    for name, schema in definition.get("parameters", {}).get("properties", {}).items():
        array = schema.get("type") == "array"
        kind = schema.get("items", {}).get("type") if array else schema.get("type")
        if kind not in _SCALARS:
            raise ConfigError(f"{nsid}: parameter {name} has unsupported type {kind!r}")
        params[name] = Param(name, kind, array, schema.get("default"))
    return Method(nsid, params)


def _coerce(param: Param, raw: str) -> Any:
    if param.type == "integer":
        if not _INTEGER.fullmatch(raw):
            raise errors.InvalidRequest(f"parameter {param.name!r} must be an integer, got {raw[:50]!r}")
        return int(raw)
    if param.type == "boolean":
        if raw not in ("true", "false"):
            raise errors.InvalidRequest(f"parameter {param.name!r} must be true or false, got {raw[:50]!r}")
        return raw == "true"
    return raw


async def json_input(request: Request, nsid: str) -> dict[str, Any]:
    """A procedure's JSON body, at most MAX_JSON_BYTES, with only the fields its lexicon names, validated."""
    if request.headers.get("content-type", "").split(";", 1)[0].strip().lower() != "application/json":
        raise errors.InvalidRequest("the body must be application/json")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_JSON_BYTES:
            raise errors.PayloadTooLarge(f"the body is larger than {MAX_JSON_BYTES} bytes")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise errors.InvalidRequest("the body is not JSON") from None
    if not isinstance(value, dict):
        raise errors.InvalidRequest("the body must be a JSON object")
    known = lexicons.main_def(nsid)["input"]["schema"]["properties"]
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise errors.InvalidRequest(f"unknown field {unknown[0][:50]!r}: only {', '.join(known)} can be given")
    try:
        lexicons.validator().validate(nsid, "input", value)
    except ValidationError as exc:
        raise errors.InvalidRequest(str(exc)) from None
    return value
