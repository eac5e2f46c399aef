"""The lexicon JSON files are the single source of truth for record and API shapes.

They ship inside the package (`indexer/atproto/lexicons/`, which the repository's top-level `lexicons`
links to), so an installed wheel validates exactly what the source tree does.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import orjson
from lexrpc.base import Base

LEXICON_ROOT = files(__package__) / "lexicons"


def _json_files(directory: Traversable) -> list[Traversable]:
    found: list[Traversable] = []
    for entry in directory.iterdir():
        if entry.is_dir():
            found.extend(_json_files(entry))
        elif entry.name.endswith(".json"):
            found.append(entry)
    return found


@cache
def load_all() -> tuple[dict[str, Any], ...]:
    documents = sorted(_json_files(LEXICON_ROOT), key=lambda entry: str(entry))
    return tuple(orjson.loads(entry.read_bytes()) for entry in documents)


@cache
def validator() -> Base:
    """One lexrpc validator over every lexicon: records, query parameters and outputs."""
    return Base(lexicons=list(load_all()))


def main_def(nsid: str) -> dict[str, Any]:
    for lexicon in load_all():
        if lexicon["id"] == nsid:
            main: dict[str, Any] = lexicon["defs"]["main"]
            return main
    raise KeyError(nsid)
