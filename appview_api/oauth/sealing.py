"""Sealing what the database keeps of a sign-in: AES-256-GCM under a key derived from RELAY_SESSION_SECRET.

A session row holds refresh tokens and a DPoP private key: whoever reads them acts as the user on their
PDS. Sealed, a copy of the database alone gives nothing. Each blob is bound to the row it was written for
(the row's key is the associated data), so a sealed session cannot be moved under another cookie.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"
_NONCE_BYTES = 12


class Sealer:
    def __init__(self, secret: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"relay-appview session sealing v1")
        self._aead = AESGCM(key.derive(secret.encode()))

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes | None:
        """The plaintext, or None when the blob was sealed under another key or context, or altered."""
        if not sealed.startswith(_VERSION) or len(sealed) < 1 + _NONCE_BYTES + 16:
            return None
        nonce = sealed[1 : 1 + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, sealed[1 + _NONCE_BYTES :], context.encode())
        except InvalidTag:
            return None
