"""An account's signing key, from its DID document: what a repository commit's signature is checked with.

The key is the verification method whose `id` is `#atproto` (or `<did>#atproto`). Documents carry it in two
forms, and both are live: `Multikey` (publicKeyMultibase = base58btc of a multicodec prefix and the
compressed point), and the legacy `EcdsaSecp256k1VerificationKey2019` / `EcdsaSecp256r1VerificationKey2019`
(base58btc of the bare point, often uncompressed), which the reference PLC directory still publishes.
Prefixing `did:key:` to a legacy value yields a did:key that does not parse, so each form is decoded,
the point checked to be on its curve, and the key re-encoded as a canonical did:key (`did_key`, the form
`atproto_crypto.verify_signature` accepts).

`SigningKey.verify` keeps the parsed public key, so a proof does not decode the point again (~30 µs of the
~320 µs `verify_signature` costs), and applies the same rules: 64-byte compact signature, low-S only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import libipld
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from indexer.atproto.proof_errors import SigningKeyError

P256 = "p256"
SECP256K1 = "secp256k1"

_MULTICODEC = {P256: b"\x80\x24", SECP256K1: b"\xe7\x01"}
_CURVES: dict[str, ec.EllipticCurve] = {P256: ec.SECP256R1(), SECP256K1: ec.SECP256K1()}
_ORDERS = {
    P256: 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    SECP256K1: 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
}
_LEGACY_TYPES = {"EcdsaSecp256r1VerificationKey2019": P256, "EcdsaSecp256k1VerificationKey2019": SECP256K1}
_DID_KEY_PREFIX = "did:key:"


@dataclass(frozen=True, slots=True)
class SigningKey:
    curve: str  # P256 or SECP256K1
    did_key: str  # canonical did:key (compressed point), as atproto_crypto takes it
    _public: ec.EllipticCurvePublicKey = field(repr=False, compare=False)

    def verify(self, data: bytes, signature: bytes) -> bool:
        """ECDSA-SHA256 over `data`; the signature is r || s (32 bytes each), and s must be low."""
        if len(signature) != 64:
            return False
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        order = _ORDERS[self.curve]
        if not (0 < r < order and 0 < s <= order // 2):
            return False  # a high-S twin of a valid signature is refused: signatures must not be malleable
        try:
            self._public.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


def signing_key(document: Mapping[str, Any], did: str | None = None) -> SigningKey:
    """The `#atproto` key of a DID document (checked to be `did`'s, when given)."""
    if not isinstance(document, Mapping):
        raise SigningKeyError("DID document is not a JSON object")
    subject = document.get("id")
    if did is not None and subject != did:
        raise SigningKeyError(f"DID document is for {str(subject)[:100]!r}, not {did}")
    methods = document.get("verificationMethod")
    if not isinstance(methods, list):
        raise SigningKeyError("DID document has no verificationMethod list")
    ids = {"#atproto", f"{subject}#atproto"}
    method = next((m for m in methods if isinstance(m, Mapping) and m.get("id") in ids), None)
    if method is None:
        raise SigningKeyError("DID document has no #atproto verification method")
    kind = method.get("type")
    encoded = method.get("publicKeyMultibase")
    if not isinstance(encoded, str):
        raise SigningKeyError("#atproto verification method has no publicKeyMultibase")
    if kind == "Multikey":
        return parse_multikey(encoded)
    if kind in _LEGACY_TYPES:
        return _from_point(_LEGACY_TYPES[kind], _base58btc(encoded))
    raise SigningKeyError(f"#atproto key type {str(kind)[:100]!r} is not supported")


def parse_did_key(did_key: str) -> SigningKey:
    """A `did:key:z...` (a Multikey behind the prefix), as PLC's `/data` and service configs give keys."""
    if not did_key.startswith(_DID_KEY_PREFIX):
        raise SigningKeyError(f"{did_key[:100]!r} is not a did:key")
    return parse_multikey(did_key.removeprefix(_DID_KEY_PREFIX))


def parse_multikey(encoded: str) -> SigningKey:
    raw = _base58btc(encoded)
    for curve, prefix in _MULTICODEC.items():
        if raw.startswith(prefix):
            point = raw[len(prefix) :]
            if len(point) != 33:
                raise SigningKeyError(f"{curve} Multikey holds {len(point)} bytes, not a 33-byte compressed point")
            return _from_point(curve, point)
    raise SigningKeyError(f"Multikey codec {raw[:2].hex()} is neither P-256 (8024) nor secp256k1 (e701)")


def _base58btc(encoded: str) -> bytes:
    if not encoded.startswith("z") or len(encoded) > 200:
        raise SigningKeyError("#atproto key is not base58btc multibase (z...)")
    try:
        return libipld.decode_multibase(encoded)[1]
    except ValueError:
        raise SigningKeyError("#atproto key is not valid base58btc") from None


def _from_point(curve: str, point: bytes) -> SigningKey:
    try:
        public = ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[curve], point)
    except ValueError:
        raise SigningKeyError(f"#atproto key is not a {curve} public key") from None
    compressed = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    did_key = _DID_KEY_PREFIX + libipld.encode_multibase("z", _MULTICODEC[curve] + compressed)
    return SigningKey(curve, did_key, public)
