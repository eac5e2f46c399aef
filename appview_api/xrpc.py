"""XRPC plumbing: the one error type, and query parameters parsed as the method's lexicon declares them.

Query strings carry only text, so each value is first coerced to the type the lexicon gives its parameter,
then the whole set goes through lexrpc, which checks required names, bounds, lengths and formats and refuses
unknown names. Nothing here knows a particular method: the lexicon JSON is the single source of truth.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from lexrpc.base import ValidationError
from starlette.responses import Response

from indexer.atproto import lexicons
from indexer.errors import ConfigError, RelayError

_INTEGER = re.compile(r"-?[0-9]{1,18}")  # int() would also take "1_0", " 7" and non-ASCII digits
_SCALARS = frozenset({"string", "integer", "boolean"})


class XrpcError(RelayError):
    """An error the client sees as `{"error": name, "message": reason}` with an HTTP status."""

    def __init__(self, name: str, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.name = name
        self.status = status

    def response(self) -> Response:
        return json_response({"error": self.name, "message": self.reason}, self.status)


def invalid(reason: str) -> XrpcError:
    return XrpcError("InvalidRequest", reason, 400)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: str
    array: bool
    default: Any


@dataclass(frozen=True)
class Method:
    """A query method as its lexicon declares it."""

    nsid: str
    params: Mapping[str, Param]
    errors: frozenset[str]

    def error(self, name: str, reason: str, status: int) -> XrpcError:
        if name not in self.errors:
            raise LookupError(f"{self.nsid} declares no error {name}")
        return XrpcError(name, reason, status)

    def parse(self, query: Iterable[tuple[str, str]]) -> dict[str, Any]:
        """Typed, validated parameters with the lexicon's defaults filled in; XrpcError otherwise."""
        values: dict[str, Any] = {}
        for name, raw in query:
            param = self.params.get(name)
            if param is None:
                raise invalid(f"unknown parameter {name!r}")
            value = _coerce(param, raw)
            if param.array:
                values.setdefault(name, []).append(value)
            elif name in values:
                raise invalid(f"parameter {name!r} given more than once")
            else:
                values[name] = value
        try:
            lexicons.validator().validate(self.nsid, "parameters", values)
        except ValidationError as exc:
            raise invalid(str(exc)) from None
        for param in self.params.values():
            if param.default is not None:
                values.setdefault(param.name, param.default)
        return values


def method(nsid: str) -> Method:
    """Read a query's lexicon; a parameter type we cannot carry in a query string is a ConfigError."""
    definition = lexicons.main_def(nsid)
    if definition.get("type") != "query":
        raise ConfigError(f"{nsid}: not a query lexicon")
    params: dict[str, Param] = {}
    for name, schema in definition.get("parameters", {}).get("properties", {}).items():
        array = schema.get("type") == "array"
        kind = schema.get("items", {}).get("type") if array else schema.get("type")
        if kind not in _SCALARS:
            raise ConfigError(f"{nsid}: parameter {name} has unsupported type {kind!r}")
        params[name] = Param(name, kind, array, schema.get("default"))
    errors = frozenset(error["name"] for error in definition.get("errors", ()))
    return Method(nsid, params, errors)


def _coerce(param: Param, raw: str) -> Any:
    if param.type == "integer":
        if not _INTEGER.fullmatch(raw):
            raise invalid(f"parameter {param.name!r} must be an integer, got {raw[:50]!r}")
        return int(raw)
    if param.type == "boolean":
        if raw not in ("true", "false"):
            raise invalid(f"parameter {param.name!r} must be true or false, got {raw[:50]!r}")
        return raw == "true"
    return raw
