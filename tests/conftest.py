"""Shared fixtures live in tests/fixtures/, one module per real part (Jetstream, audio, PDS, S3)."""

import os
from pathlib import Path

from tests.builders import NO_BACKFILL

# Processes the tests start inherit this environment: never the public default relay (see NO_BACKFILL).
for _name, _value in NO_BACKFILL.items():
    os.environ.setdefault(_name, _value)

pytest_plugins = sorted(
    f"tests.fixtures.{path.stem}"
    for path in (Path(__file__).parent / "fixtures").glob("*.py")
    if path.stem != "__init__"
)
