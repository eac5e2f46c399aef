"""atproto identifier syntax (DIDs, handles, record keys), as the specs define it, checked with fullmatch.

These are cheap enough for the ingest path (one compiled regex each) and strict: a stranger's 100 KB
"DID" or 200 KB record key is refused at once rather than stored. `fullmatch`, not `^...$`: `$` also
matches before a final newline.
"""

from __future__ import annotations

import re

MAX_DID_LENGTH = 2048
MAX_HANDLE_LENGTH = 253

_DID = re.compile(r"did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]")
_HANDLE = re.compile(
    r"([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
)
_RECORD_KEY = re.compile(r"[A-Za-z0-9._:~-]{1,512}")


def is_did(value: str) -> bool:
    return len(value) <= MAX_DID_LENGTH and _DID.fullmatch(value) is not None


def is_handle(value: str) -> bool:
    return len(value) <= MAX_HANDLE_LENGTH and _HANDLE.fullmatch(value) is not None


def is_record_key(value: str) -> bool:
    return value not in (".", "..") and _RECORD_KEY.fullmatch(value) is not None
