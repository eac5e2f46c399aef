"""Waiting for a state the system under test must reach."""

import asyncio
from collections.abc import Callable


async def eventually(check: Callable[[], object], timeout: float = 15.0) -> None:
    """Poll until `check()` is true; the timeout is a hang guard, not a measurement."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)
