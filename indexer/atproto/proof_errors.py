"""Why a proof failed: errors of the CAR reader, the MST walker, DID keys and the record proofs.

    RelayError                   indexer/errors.py
    └── ProofError               nothing was proven; `reason` says what broke
        ├── MalformedCar         not a CAR v1 we read: header, lengths, CID form, truncated, over the cap
        ├── HashMismatch         a block's bytes do not hash to its CID
        ├── MalformedBlock       a block that is not canonical DAG-CBOR, or not the shape its place needs
        ├── MissingBlock         the CAR lacks a block the proof walks through: an incomplete proof
        ├── BrokenTree           the MST breaks the spec: order, depth, prefixes, empty nodes, bounds
        ├── WrongRepo            the commit is signed for another account
        ├── BadSignature         the commit's signature does not verify against the account's key
        └── SigningKeyError      the DID document offers no usable #atproto key

A PDS that answers with any of these has not shown the record, whatever the reason: callers treat every
ProofError alike (unproven), and use the class only to tell forgery-looking failures (HashMismatch,
BadSignature, WrongRepo) from incomplete ones (MissingBlock) in logs and metrics.
"""

from __future__ import annotations

from indexer.errors import RelayError


class ProofError(RelayError):
    pass


class MalformedCar(ProofError):
    pass


class HashMismatch(ProofError):
    pass


class MalformedBlock(ProofError):
    pass


class MissingBlock(ProofError):
    pass


class BrokenTree(ProofError):
    pass


class WrongRepo(ProofError):
    pass


class BadSignature(ProofError):
    pass


class SigningKeyError(ProofError):
    pass
