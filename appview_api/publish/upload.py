"""A publish request's multipart body, read as it arrives: the file goes to disk, hashed and counted.

Nothing here holds the file in memory: each chunk of the body goes through python-multipart's streaming
parser, and each piece of the file part is written to a temporary file and fed to sha256 at once. Limits
are enforced on the bytes seen so far, so an oversized upload is refused as soon as it crosses the limit
instead of after it has all arrived, and a file whose first bytes are not audio is refused after those
bytes. `FormSpooler` is the sans-I/O core (chunks in, a `Form` out); `spool_form` feeds it from a request
into a file in the system temp directory (TMPDIR), removed when the request is done with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from appview_api.audio.format import HEAD_BYTES, sniff
from appview_api.errors import InvalidRequest, PayloadTooLarge, RequestError, RequestTimeout

FILE_FIELD = "audio"
TEXT_FIELDS = frozenset({"title", "artist", "album"})
MAX_FIELD_BYTES = 4096  # far above the lexicon's 280: the record check then names the exact rule
# Boundaries, part headers and the text fields on top of the file itself.
FORM_OVERHEAD_BYTES = 64 * 1024


def too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the upload is larger than {max_bytes} bytes")


@dataclass
class Form:
    fields: dict[str, str]
    path: Path  # the spooled file
    size: int
    sha256: str


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    text: bytearray | None = None


class FormSpooler:
    """Feed it the body's chunks in order, then `finish()`; every refusal is a RequestError raised at once."""

    def __init__(
        self,
        boundary: bytes,
        sink: BinaryIO,
        path: Path,
        max_file_bytes: int,
        text_fields: frozenset[str] = TEXT_FIELDS,
        refuse: Callable[[int], RequestError] = too_large,
    ) -> None:
        self._text_fields = text_fields
        self._refuse = refuse
        self._sink = sink
        self._path = path
        self._max_file_bytes = max_file_bytes
        self._hash = hashlib.sha256()
        self._size = 0
        self._head = b""
        self._sniffed = False
        self._has_file = False
        self._fields: dict[str, str] = {}
        self._part = _Part()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._ended = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": lambda data, start, end: self._header_field.extend(data[start:end]),
                "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidRequest(f"malformed multipart body: {exc}") from None

    def finish(self) -> Form:
        if not self._ended:
            raise InvalidRequest("malformed multipart body: it ends before its closing boundary")
        if not self._has_file:
            raise InvalidRequest(f"the form has no {FILE_FIELD!r} file part")
        self._check_head(final=True)
        return Form(self._fields, self._path, self._size, self._hash.hexdigest())

    # -- parser callbacks --------------------------------------------------------------------------

    def _part_begin(self) -> None:
        self._part = _Part()

    def _header_end(self) -> None:
        self._part.headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._part.headers.get(b"content-disposition"))
        raw_name = options.get(b"name")
        if disposition != b"form-data" or raw_name is None:
            raise InvalidRequest("a form part has no Content-Disposition: form-data name")
        name = raw_name.decode("utf-8", "replace")
        self._part.name = name
        if name == FILE_FIELD:
            if self._has_file:
                raise InvalidRequest(f"the form has more than one {FILE_FIELD!r} part")
            self._has_file = True
        elif name in self._text_fields:
            if name in self._fields:
                raise InvalidRequest(f"form field {name!r} given more than once")
            self._part.text = bytearray()
        else:
            raise InvalidRequest(f"unknown form field {name[:50]!r}")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        text = self._part.text
        if text is not None:
            text.extend(data[start:end])
            if len(text) > MAX_FIELD_BYTES:
                raise InvalidRequest(f"form field {self._part.name!r} is longer than {MAX_FIELD_BYTES} bytes")
            return
        self._size += end - start
        if self._size > self._max_file_bytes:
            raise self._refuse(self._max_file_bytes)
        piece = data[start:end]
        self._hash.update(piece)
        self._sink.write(piece)
        if not self._sniffed:
            self._head += piece[: HEAD_BYTES - len(self._head)]
            self._check_head(final=False)

    def _part_end(self) -> None:
        text = self._part.text
        if text is not None:
            try:
                self._fields[self._part.name] = text.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(f"form field {self._part.name!r} is not UTF-8 text") from None

    def _end(self) -> None:
        self._ended = True

    def _check_head(self, *, final: bool) -> None:
        """Refuse a file that is not audio from its first bytes, before the rest of it is read."""
        if self._sniffed or (len(self._head) < HEAD_BYTES and not final):
            return
        self._sniffed = True
        sniff(self._head)


def boundary_of(content_type: str | None) -> bytes:
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidRequest("the body must be multipart/form-data with a boundary")
    return boundary


@dataclass(frozen=True)
class Limits:
    """How much of a body is taken: `max_file_bytes` (over it, `refuse(max_file_bytes)`), with no pause
    longer than `read_timeout` seconds between chunks, each chunk spent from `charge` (which raises when
    the service's budget is out)."""

    max_file_bytes: int
    read_timeout: float | None = None
    charge: Callable[[int], None] | None = None
    refuse: Callable[[int], RequestError] = too_large


@contextlib.asynccontextmanager
async def spool_form(
    body: AsyncIterable[bytes],
    content_type: str | None,
    content_length: str | None,
    limits: Limits | int,
    text_fields: frozenset[str] = TEXT_FIELDS,
) -> AsyncIterator[Form]:
    """Read the whole form into a temporary file that exists until the block exits (raising or not);
    `text_fields` are the form's text fields besides the file (the web form adds its CSRF token)."""
    if isinstance(limits, int):
        limits = Limits(limits)
    boundary = boundary_of(content_type)
    max_file_bytes = limits.max_file_bytes
    max_body = max_file_bytes + FORM_OVERHEAD_BYTES
    if content_length is not None and content_length.isdigit() and int(content_length) > max_body:
        raise limits.refuse(max_file_bytes)  # declared too large: refused before a byte of it is read
    fd, name = tempfile.mkstemp(prefix="relay-upload-", suffix=".part")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as sink:
            spooler = FormSpooler(boundary, sink, path, max_file_bytes, text_fields, limits.refuse)
            received = 0
            async for chunk in _paced(body, limits.read_timeout):
                received += len(chunk)
                if received > max_body:
                    raise limits.refuse(max_file_bytes)
                if limits.charge is not None:
                    limits.charge(len(chunk))
                spooler.feed(chunk)
            form = spooler.finish()
        yield form
    finally:
        path.unlink(missing_ok=True)


async def _paced(body: AsyncIterable[bytes], seconds: float | None) -> AsyncIterator[bytes]:
    """The body's chunks, refusing a pause longer than `seconds`: a client that stops sending mid-upload
    must not hold a temporary file (and a connection) until it gives up on its own."""
    chunks = aiter(body)
    while True:
        try:
            chunk = await asyncio.wait_for(anext(chunks), seconds)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise RequestTimeout(f"no bytes of the upload arrived for {seconds:g} s") from None
        yield chunk

