"""Signing keys from DID documents: Multikey and the legacy 2019 forms, both curves; real PLC documents too."""

from __future__ import annotations

from typing import Any

import httpx
import libipld
import pytest
from atproto_crypto.exceptions import UnsupportedKeyTypeError
from atproto_crypto.verify import verify_signature
from cryptography.hazmat.primitives import serialization

from indexer.atproto.keys import P256, SECP256K1, parse_did_key, signing_key
from indexer.atproto.proof_errors import SigningKeyError
from tests.fixtures.pds import LocalPds
from tests.repo_builders import did_document, multikey, new_key, sign

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
DATA = b"an unsigned commit"


def point(private: Any, *, compressed: bool) -> bytes:
    form = serialization.PublicFormat.CompressedPoint if compressed else serialization.PublicFormat.UncompressedPoint
    return private.public_key().public_bytes(serialization.Encoding.X962, form)


@pytest.mark.parametrize("curve", [P256, SECP256K1])
def test_multikey_documents(curve: str) -> None:
    private = new_key(curve)
    key = signing_key(did_document(DID, {"type": "Multikey", "publicKeyMultibase": multikey(private)}), DID)
    signature = sign(private, DATA)
    assert key.curve == curve
    assert key.did_key == f"did:key:{multikey(private)}"
    assert key.verify(DATA, signature) is True
    assert verify_signature(key.did_key, DATA, signature) is True  # what atproto_crypto accepts
    assert key.verify(DATA + b"!", signature) is False
    assert parse_did_key(key.did_key).did_key == key.did_key


@pytest.mark.parametrize(
    ("kind", "curve"), [("EcdsaSecp256k1VerificationKey2019", SECP256K1), ("EcdsaSecp256r1VerificationKey2019", P256)]
)
@pytest.mark.parametrize("compressed", [False, True])
def test_legacy_documents_become_the_same_did_key(kind: str, curve: str, compressed: bool) -> None:
    private = new_key(curve)
    encoded = libipld.encode_multibase("z", point(private, compressed=compressed))
    document = did_document(DID, {"type": kind, "publicKeyMultibase": encoded})
    document["verificationMethod"][0]["id"] = "#atproto"  # the short form PLC serves
    key = signing_key(document, DID)
    assert key.did_key == f"did:key:{multikey(private)}"
    assert key.verify(DATA, sign(private, DATA)) is True
    with pytest.raises(UnsupportedKeyTypeError, match=r"^Unsupported key type$"):  # blind prefixing fails
        verify_signature(f"did:key:{encoded}", DATA, sign(private, DATA))


@pytest.mark.parametrize("curve", [P256, SECP256K1])
def test_high_s_and_malformed_signatures_are_refused(curve: str) -> None:
    private = new_key(curve)
    key = signing_key(did_document(DID, {"type": "Multikey", "publicKeyMultibase": multikey(private)}))
    high = sign(private, DATA, high_s=True)
    assert key.verify(DATA, high) is False
    assert verify_signature(key.did_key, DATA, high) is False  # atproto_crypto agrees
    low = sign(private, DATA)
    assert key.verify(DATA, low + b"\x00") is False
    assert key.verify(DATA, low[:63]) is False
    assert key.verify(DATA, bytes(64)) is False


def test_only_the_atproto_method_counts() -> None:
    other, ours = new_key(P256), new_key(SECP256K1)
    document = did_document(DID, {"type": "Multikey", "publicKeyMultibase": multikey(ours)})
    document["verificationMethod"].insert(
        0, {"id": f"{DID}#other", "type": "Multikey", "controller": DID, "publicKeyMultibase": multikey(other)}
    )
    assert signing_key(document).did_key == f"did:key:{multikey(ours)}"


def _document(**method: Any) -> dict[str, Any]:
    return did_document(DID, method)


SECP = multikey(new_key(SECP256K1))
ED25519 = libipld.encode_multibase("z", b"\xed\x01" + bytes(32))
NOT_ON_CURVE = libipld.encode_multibase("z", b"\xe7\x01\x02" + b"\xff" * 32)


@pytest.mark.parametrize(
    ("document", "did", "reason"),
    [
        ([], None, "DID document is not a JSON object"),
        (_document(type="Multikey", publicKeyMultibase=SECP), "did:plc:someoneelse", f"DID document is for {DID!r}, not did:plc:someoneelse"),
        ({"id": DID}, None, "DID document has no verificationMethod list"),
        ({"id": DID, "verificationMethod": [{"id": "#atproto_label", "type": "Multikey"}]}, None, "DID document has no #atproto verification method"),
        ({"id": DID, "verificationMethod": [{"id": "did:plc:other#atproto", "type": "Multikey", "publicKeyMultibase": SECP}]}, None, "DID document has no #atproto verification method"),
        (_document(type="JsonWebKey2020", publicKeyMultibase=SECP), None, "#atproto key type 'JsonWebKey2020' is not supported"),
        (_document(type="Multikey", publicKeyJwk={}), None, "#atproto verification method has no publicKeyMultibase"),
        (_document(type="Multikey", publicKeyMultibase="u" + SECP[1:]), None, "#atproto key is not base58btc multibase (z...)"),
        (_document(type="Multikey", publicKeyMultibase="z0OIl"), None, "#atproto key is not valid base58btc"),
        (_document(type="Multikey", publicKeyMultibase="z" + "1" * 300), None, "#atproto key is not base58btc multibase (z...)"),
        (_document(type="Multikey", publicKeyMultibase=ED25519), None, "Multikey codec ed01 is neither P-256 (8024) nor secp256k1 (e701)"),
        (_document(type="Multikey", publicKeyMultibase=libipld.encode_multibase("z", b"\x80\x24" + bytes(65))), None, "p256 Multikey holds 65 bytes, not a 33-byte compressed point"),
        (_document(type="Multikey", publicKeyMultibase=NOT_ON_CURVE), None, "#atproto key is not a secp256k1 public key"),
        (_document(type="EcdsaSecp256r1VerificationKey2019", publicKeyMultibase=libipld.encode_multibase("z", b"\x04" + bytes(64))), None, "#atproto key is not a p256 public key"),
    ],
)
def test_unusable_documents_say_why(document: Any, did: str | None, reason: str) -> None:
    with pytest.raises(SigningKeyError) as caught:
        signing_key(document, did)
    assert caught.value.reason == reason


def test_parse_did_key_refuses_other_strings() -> None:
    with pytest.raises(SigningKeyError) as caught:
        parse_did_key("zQ3shSoxPZsZoRH5iuTysZj1kEjyRM3KAjW6qrwe33S8eozPU")
    assert caught.value.reason == "'zQ3shSoxPZsZoRH5iuTysZj1kEjyRM3KAjW6qrwe33S8eozPU' is not a did:key"


@pytest.mark.slow
def test_the_reference_plc_documents(local_pds: LocalPds) -> None:
    account = local_pds.create_account("keys")
    document = httpx.get(f"{local_pds.plc_url}/{account.did}", timeout=10).json()
    published = httpx.get(f"{local_pds.plc_url}/{account.did}/data", timeout=10).json()
    method = document["verificationMethod"][0]
    assert (method["id"], method["type"]) == ("#atproto", "EcdsaSecp256k1VerificationKey2019")  # the legacy form
    key = signing_key(document, account.did)
    assert key.curve == SECP256K1
    assert key.did_key == published["verificationMethods"]["atproto"]
