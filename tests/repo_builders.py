"""Builders for repository data the reference PDS would never send: CARs, canonical MSTs, signed commits.

Written from the specs, independently of the code under test (no helper of indexer.atproto is used to
build what it is then asked to check, beyond `key_depth`, which the spec's examples pin in test_mst).
`build_mst` is held to the reference PDS in test_proof: the tree it builds from a real repository's records
has the root CID the PDS signed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import libipld
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from indexer.atproto.mst import key_depth

CURVES = {"p256": ec.SECP256R1(), "secp256k1": ec.SECP256K1()}
ORDERS = {
    "p256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp256k1": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
}
MULTICODEC = {"p256": b"\x80\x24", "secp256k1": b"\xe7\x01"}


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def cid_of(data: bytes, codec: int = 0x71) -> bytes:
    return bytes((1, codec, 0x12, 0x20)) + hashlib.sha256(data).digest()


def block(value: Any) -> tuple[bytes, bytes]:
    data = libipld.encode_dag_cbor(value)
    return cid_of(data), data


def car(roots: list[bytes], blocks: Iterable[tuple[bytes, bytes]], *, header: bytes | None = None) -> bytes:
    """A CAR v1: the header (or the given header bytes), then each (CID, data) section in order."""
    head = header if header is not None else libipld.encode_dag_cbor({"roots": roots, "version": 1})
    out = bytearray(varint(len(head)) + head)
    for cid, data in blocks:
        out += varint(len(cid) + len(data)) + cid + data
    return bytes(out)


def build_mst(items: Mapping[bytes, bytes]) -> tuple[bytes, dict[bytes, bytes]]:
    """The canonical MST of key -> value CID: (root CID, its node blocks)."""
    blocks: dict[bytes, bytes] = {}
    keys = sorted(items)
    top = max((key_depth(key) for key in keys), default=0)
    return _build(keys, items, top, blocks), blocks


def _build(keys: list[bytes], items: Mapping[bytes, bytes], layer: int, blocks: dict[bytes, bytes]) -> bytes:
    here = [key for key in keys if key_depth(key) == layer]
    groups: list[list[bytes]] = [[]]
    for key in keys:
        if key in here:
            groups.append([])
        else:
            groups[-1].append(key)
    links = [_build(group, items, layer - 1, blocks) if group else None for group in groups]
    entries, previous = [], b""
    for key, right in zip(here, links[1:], strict=True):
        shared = _shared(previous, key)
        entries.append({"p": shared, "k": key[shared:], "v": items[key], "t": right})
        previous = key
    cid, data = block({"l": links[0], "e": entries})
    blocks[cid] = data
    return cid


def node(left: bytes | None, entries: list[tuple[bytes, bytes, bytes | None]]) -> dict[str, Any]:
    """An MST node from (key, value, right) triples, prefix-compressed as the spec says."""
    out, previous = [], b""
    for key, value, right in entries:
        shared = _shared(previous, key)
        out.append({"p": shared, "k": key[shared:], "v": value, "t": right})
        previous = key
    return {"l": left, "e": out}


def _shared(a: bytes, b: bytes) -> int:
    count = 0
    while count < min(len(a), len(b)) and a[count] == b[count]:
        count += 1
    return count


def new_key(curve: str = "secp256k1") -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(CURVES[curve])


def sign(private: ec.EllipticCurvePrivateKey, data: bytes, *, high_s: bool = False) -> bytes:
    """A compact r || s signature, low-S unless asked otherwise (as atproto requires)."""
    curve = "p256" if isinstance(private.curve, ec.SECP256R1) else "secp256k1"
    r, s = decode_dss_signature(private.sign(data, ec.ECDSA(hashes.SHA256())))
    order = ORDERS[curve]
    s = min(s, order - s)
    if high_s:
        s = order - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def commit(
    private: ec.EllipticCurvePrivateKey, *, did: str, data: bytes, rev: str = "3n3gh6cthtk2k", **override: Any
) -> tuple[bytes, bytes]:
    """A signed v3 commit block; `override` replaces or adds fields before signing (None values delete)."""
    unsigned: dict[str, Any] = {"did": did, "version": 3, "data": data, "rev": rev, "prev": None}
    unsigned.update(override)
    unsigned = {name: value for name, value in unsigned.items() if value is not None or name == "prev"}
    signature = sign(private, libipld.encode_dag_cbor(unsigned))
    return block({**unsigned, "sig": signature})


def resign(commit_data: bytes, private: ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes]:
    """The same commit, signed again with another key."""
    value = libipld.decode_dag_cbor(commit_data)
    value.pop("sig")
    return block({**value, "sig": sign(private, libipld.encode_dag_cbor(value))})


def multikey(private: ec.EllipticCurvePrivateKey) -> str:
    curve = "p256" if isinstance(private.curve, ec.SECP256R1) else "secp256k1"
    point = private.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    return libipld.encode_multibase("z", MULTICODEC[curve] + point)


def did_document(did: str, method: dict[str, Any]) -> dict[str, Any]:
    return {
        "@context": ["https://www.w3.org/ns/did/v1"],
        "id": did,
        "alsoKnownAs": ["at://alice.test"],
        "verificationMethod": [{"id": f"{did}#atproto", "controller": did, **method}],
        "service": [],
    }
