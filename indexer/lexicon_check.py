"""Lexicon object schemas compiled once into plain checks, for the ingest hot path.

lexrpc walks the schema on every call, ~15 µs a record here, which was the largest single cost of
ingest. This reads the same lexicon JSON and builds one closure per property. It knows exactly the subset
our record lexicons use (strings with byte lengths, enums, const and the uri/datetime formats; integers
with bounds; booleans) and refuses anything else when compiling, so no rule is ever skipped silently.
Formats take a fast path for their common well-formed shape and leave every other value to lexrpc's own
format check. tests/test_lexicon_check.py holds it to lexrpc's verdicts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from lexrpc.base import Base, ValidationError

Check = Callable[[Any], str | None]  # None when valid, else the reason

_STRING_KEYS = {"type", "description", "maxLength", "minLength", "enum", "const", "format", "default", "knownValues"}
_INTEGER_KEYS = {"type", "description", "minimum", "maximum", "enum", "const", "default"}


class UnsupportedSchema(ValueError):
    """The lexicon uses something this compiler does not check; use lexrpc for it instead."""


def compile_object(schema: dict[str, Any]) -> Callable[[dict[str, Any]], str | None]:
    """A checker for a lexicon `object` (or a record's `record` object) returning the first violation."""
    if schema.get("type") != "object":
        raise UnsupportedSchema(f"type {schema.get('type')!r}: only objects compile")
    required = tuple(schema.get("required", ()))
    nullable = frozenset(schema.get("nullable", ()))
    checks = tuple((name, _compile(name, prop)) for name, prop in schema.get("properties", {}).items())

    def check(obj: dict[str, Any]) -> str | None:
        for name in required:
            if name not in obj:
                return f"missing required property {name}"
        for name, check_value in checks:
            if name in obj:
                value = obj[name]
                if value is None:
                    if name in nullable:
                        continue
                    return f"{name}: must not be null"
                reason = check_value(value)
                if reason is not None:
                    return f"{name}: {reason}"
        return None

    return check


def _compile(name: str, schema: dict[str, Any]) -> Check:
    kind = schema.get("type")
    if kind == "string":
        return _string(name, schema)
    if kind == "integer":
        return _integer(name, schema)
    if kind == "boolean":
        return lambda v: None if type(v) is bool else f"has unexpected type {type(v).__name__}"
    raise UnsupportedSchema(f"{name}: type {kind!r} does not compile")


def _string(name: str, schema: dict[str, Any]) -> Check:
    extra = set(schema) - _STRING_KEYS
    if extra:
        raise UnsupportedSchema(f"{name}: string rules {sorted(extra)} do not compile")
    max_length = schema.get("maxLength")
    min_length = schema.get("minLength")
    enum = frozenset(schema["enum"]) if "enum" in schema else None
    const = schema.get("const")
    format_check = _FORMATS.get(schema["format"]) if "format" in schema else None
    if "format" in schema and format_check is None:
        raise UnsupportedSchema(f"{name}: format {schema['format']!r} does not compile")

    def check(value: Any) -> str | None:
        if type(value) is not str:
            return f"has unexpected type {type(value).__name__}"
        # Lexicon lengths count UTF-8 bytes; ASCII (nearly every value) needs no encoding to know it.
        length = len(value) if value.isascii() else len(value.encode())
        if max_length is not None and length > max_length:
            return f"is longer ({length}) than maxLength {max_length}"
        if min_length is not None and length < min_length:
            return f"is shorter ({length}) than minLength {min_length}"
        if enum is not None and value not in enum:
            return f"{value[:40]!r} is not one of enum values"
        if const is not None and value != const:
            return f"is not const value {const}"
        if format_check is not None and not format_check(value):
            return f"{value[:80]!r} is invalid for format {schema['format']}"
        return None

    return check


def _integer(name: str, schema: dict[str, Any]) -> Check:
    extra = set(schema) - _INTEGER_KEYS
    if extra:
        raise UnsupportedSchema(f"{name}: integer rules {sorted(extra)} do not compile")
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    enum = frozenset(schema["enum"]) if "enum" in schema else None
    const = schema.get("const")

    def check(value: Any) -> str | None:
        if type(value) is not int:
            return f"has unexpected type {type(value).__name__}"
        if minimum is not None and value < minimum:
            return f"is lower than minimum {minimum}"
        if maximum is not None and value > maximum:
            return f"is higher than maximum {maximum}"
        if enum is not None and value not in enum:
            return "is not one of enum values"
        if const is not None and value != const:
            return f"is not const value {const}"
        return None

    return check


def _format_check(name: str) -> Callable[[str], bool]:
    """The common well-formed shape passes on a regex; anything else is judged by lexrpc itself."""
    fast = _FAST_FORMATS[name]
    reference = Base(lexicons=[])

    def check(value: str) -> bool:
        if len(value) < 1024 and fast.fullmatch(value) and (name != "datetime" or _real_date(value)):
            return True
        try:
            reference._validate_string_format(value, name)
        except ValidationError:
            return False
        return True

    return check


def _real_date(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


_FAST_FORMATS = {
    "datetime": re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})"),
    "uri": re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#@]+(/[^\s]*)?"),
}
_FORMATS: dict[str, Callable[[str], bool]] = {name: _format_check(name) for name in _FAST_FORMATS}
