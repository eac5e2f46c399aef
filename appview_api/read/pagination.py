"""Opaque, signed keyset cursors.

A cursor is the sort key of the last row a page showed, so the next page starts strictly after it: rows
inserted meanwhile can neither repeat a row nor push one out. The key is signed (HMAC-SHA256, truncated)
together with a scope naming the query it belongs to, so a client can neither forge a position nor carry a
cursor from one query over to another. The secret comes from settings, or is generated once and kept in
the index (`Index.cursor_secret`) so cursors survive restarts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import orjson

from appview_api.errors import InvalidRequest

Key = tuple[int | str, ...]

_TAG_BYTES = 12
_REFUSED = "cursor is malformed or was not issued for this query"


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @property
    def secret(self) -> bytes:
        return self._secret

    def encode(self, scope: str, key: Key) -> str:
        payload = orjson.dumps(key)
        return f"{_b64(payload)}.{_b64(self._tag(scope, payload))}"

    def decode(self, scope: str, cursor: str, shape: tuple[type, ...]) -> Key:
        """The key inside `cursor`, checked against its signature and the expected types; else 400."""
        body, _, tag = cursor.partition(".")
        try:
            payload = _unb64(body)
            valid = hmac.compare_digest(_unb64(tag), self._tag(scope, payload))
        except (binascii.Error, ValueError):
            valid = False
        if not valid:
            raise InvalidRequest(_REFUSED)
        key = orjson.loads(payload)
        if not isinstance(key, list) or [type(part) for part in key] != list(shape):
            raise InvalidRequest(_REFUSED)
        return tuple(key)

    def _tag(self, scope: str, payload: bytes) -> bytes:
        message = scope.encode() + b"\x00" + payload
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:_TAG_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Strict: the one spelling `_b64` writes, so that a cursor is one string (it keys the response cache)."""
    if not text.isascii():
        raise ValueError("not base64")
    data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    if _b64(data) != text:
        raise ValueError("not the canonical spelling")
    return data
