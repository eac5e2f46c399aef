"""The lexicon JSON files under lexicons/ are the single source of truth for record and API shapes."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson
from lexrpc.base import Base

LEXICON_DIR = Path(__file__).resolve().parent.parent / "lexicons"


@cache
def load_all(directory: Path = LEXICON_DIR) -> tuple[dict[str, Any], ...]:
    return tuple(orjson.loads(path.read_bytes()) for path in sorted(directory.rglob("*.json")))


@cache
def validator(directory: Path = LEXICON_DIR) -> Base:
    """One lexrpc validator over every lexicon: records, query parameters and outputs."""
    return Base(lexicons=list(load_all(directory)))


def main_def(nsid: str, directory: Path = LEXICON_DIR) -> dict[str, Any]:
    for lexicon in load_all(directory):
        if lexicon["id"] == nsid:
            return lexicon["defs"]["main"]
    raise KeyError(nsid)
