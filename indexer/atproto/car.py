"""A CAR v1 reader that checks every block against its CID, within a byte cap.

A CAR is untrusted input from a stranger's PDS. `atproto_core.car.CAR.from_bytes` (libipld's
`decode_car`) neither checks that a block's bytes hash to its CID nor bounds what it reads, so a proof
built on it proves nothing. Here every block's sha-256 is compared with its CID as soon as the block is
complete, and anything but CIDv1 / sha-256 / dag-cbor or raw is refused with a reason.

Sans-I/O: `CarReader` is fed bytes as they arrive and hands back the blocks they complete; it never holds
more than `max_bytes` (it refuses a section that would cross the cap before its bytes arrive). `read_car`
drives it from an async byte iterator (an httpx response stream); `Car.from_bytes` reads a small CAR
already in memory (a getRecord proof is about 2 KB).

Blocks are returned as raw bytes and decoded only when a proof walks through them (`dagcbor.decode_block`),
so records of other collections in a full repository are hash-checked but never decoded. A reader given
`keep` holds only the blocks it accepts (and the roots): the others are hash-checked, their CIDs noted in
`dropped`, their bytes let go, so a repository of 10,000 posts and 50 tracks costs the memory of its tree and
its tracks, not of the whole CAR.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Mapping
from dataclasses import dataclass, field

import libipld

from indexer.atproto.cid import (
    CID_LENGTH,
    VarintTruncated,
    cid_problem,
    cid_str,
    codec_of,
    digest_matches,
    read_varint,
)
from indexer.atproto.proof_errors import HashMismatch, MalformedCar

MAX_HEADER_BYTES = 4096  # one or a few roots take under 100


@dataclass(frozen=True, slots=True)
class Car:
    """A checked CAR: its roots and its blocks (binary CID -> bytes), each block's hash verified."""

    roots: tuple[bytes, ...]
    blocks: Mapping[bytes, bytes]
    size: int
    dropped: frozenset[bytes] = field(default=frozenset(), repr=False)  # checked, not kept (see `keep`)

    @classmethod
    def from_bytes(cls, data: bytes, *, max_bytes: int) -> Car:
        if len(data) > max_bytes:
            raise MalformedCar(f"CAR is larger than {max_bytes} bytes")
        reader = CarReader(max_bytes=max_bytes)
        reader.feed(data)
        return reader.finish()


Keep = Callable[[bytes], bool]  # given a block's bytes: hold it?


async def read_car(chunks: AsyncIterable[bytes], *, max_bytes: int, keep: Keep | None = None) -> Car:
    """Read a whole CAR from a byte stream, failing as soon as it crosses `max_bytes`."""
    reader = CarReader(max_bytes=max_bytes, keep=keep)
    async for chunk in chunks:
        reader.feed(chunk)
    return reader.finish()


class CarReader:
    """Incremental CAR v1 parser: `feed` bytes, get the blocks completed so far; `finish` at the end."""

    def __init__(self, *, max_bytes: int, keep: Keep | None = None) -> None:
        self._max_bytes = max_bytes
        self._keep = keep
        self._dropped: set[bytes] = set()
        self._buffer = bytearray()
        self._consumed = 0  # bytes of the stream before `_buffer`
        self._roots: tuple[bytes, ...] | None = None
        self._blocks: dict[bytes, bytes] = {}
        self._sections = 0

    @property
    def roots(self) -> tuple[bytes, ...] | None:
        """The header's roots, once the header has been read."""
        return self._roots

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """Take the next bytes of the stream; return the (CID, block) pairs they complete, hash-checked."""
        if self._consumed + len(self._buffer) + len(data) > self._max_bytes:
            raise MalformedCar(f"CAR is larger than {self._max_bytes} bytes")
        self._buffer += data
        completed: list[tuple[bytes, bytes]] = []
        pos = 0
        while True:
            section = self._next_section(pos)
            if section is None:
                break
            start, end = section
            if self._roots is None:
                self._roots = _header_roots(bytes(self._buffer[start:end]))
            else:
                completed.append(self._block(bytes(self._buffer[start:end])))
            pos = end
        del self._buffer[:pos]
        self._consumed += pos
        return completed

    def finish(self) -> Car:
        """The CAR read; refuses a stream that ended without a header or inside a section."""
        if self._roots is None:
            raise MalformedCar("CAR ends inside its header" if self._consumed or self._buffer else "CAR is empty")
        if self._buffer:
            raise MalformedCar(f"CAR ends inside block {self._sections + 1}")
        return Car(self._roots, self._blocks, self._consumed, frozenset(self._dropped))

    def _next_section(self, pos: int) -> tuple[int, int] | None:
        """(start, end) of the next complete section in the buffer, or None until more bytes arrive."""
        what = "header" if self._roots is None else f"block {self._sections + 1}"
        try:
            length, start = read_varint(self._buffer, pos)
        except VarintTruncated:
            return None
        except ValueError as exc:
            raise MalformedCar(f"{what} length: {exc}") from None
        if length == 0:
            raise MalformedCar(f"{what} is empty")
        if self._roots is None and length > MAX_HEADER_BYTES:
            raise MalformedCar(f"header is {length} bytes, more than {MAX_HEADER_BYTES}")
        end = start + length
        if self._consumed + end > self._max_bytes:
            raise MalformedCar(f"CAR is larger than {self._max_bytes} bytes")
        return (start, end) if end <= len(self._buffer) else None

    def _block(self, section: bytes) -> tuple[bytes, bytes]:
        self._sections += 1
        cid = section[:CID_LENGTH]
        if codec_of(cid) is None:
            raise MalformedCar(f"block {self._sections}: {cid_problem(section)}")
        data = section[CID_LENGTH:]
        if not digest_matches(cid, data):
            raise HashMismatch(f"block {cid_str(cid)} does not match its hash")
        if self._keep is not None and not self._keep(data) and cid not in (self._roots or ()):
            self._dropped.add(cid)
        else:
            self._blocks.setdefault(cid, data)  # a duplicate has the same bytes: its hash matched too
        return cid, data


def _header_roots(header: bytes) -> tuple[bytes, ...]:
    try:
        value = libipld.decode_dag_cbor(header)
    except (ValueError, RecursionError) as exc:
        raise MalformedCar(f"header is not DAG-CBOR: {exc}") from None
    if not isinstance(value, dict) or set(value) != {"roots", "version"}:
        if isinstance(value, dict) and value.get("version") == 2:
            raise MalformedCar("CAR v2 is not supported")
        raise MalformedCar("header is not a CAR v1 header {roots, version}")
    if value["version"] != 1 or type(value["version"]) is not int:
        raise MalformedCar(f"CAR version {value['version']!r} is not supported")
    roots = value["roots"]
    if not isinstance(roots, list) or not roots:
        raise MalformedCar("header names no roots")
    for root in roots:
        if not isinstance(root, bytes) or codec_of(root) is None:
            problem = cid_problem(root) if isinstance(root, bytes) else "not a CID"
            raise MalformedCar(f"header root: {problem}")
    if libipld.encode_dag_cbor(value) != header:
        raise MalformedCar("header is not canonical DAG-CBOR")
    return tuple(roots)
