import asyncio

import pytest

from indexer.slots import KeyedSlots


async def settle() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_limit_is_honoured_per_key() -> None:
    slots: KeyedSlots[str] = KeyedSlots(limit=2)
    release = asyncio.Event()
    inside: list[int] = []

    async def work(n: int) -> None:
        async with slots.hold("host"):
            inside.append(n)
            await release.wait()

    tasks = [asyncio.create_task(work(n)) for n in range(5)]
    await settle()
    assert inside == [0, 1]
    release.set()
    await asyncio.gather(*tasks)
    assert inside == [0, 1, 2, 3, 4]


async def test_keys_are_independent() -> None:
    slots: KeyedSlots[str] = KeyedSlots(limit=1)
    async with slots.hold("a"):
        async with asyncio.timeout(1):
            async with slots.hold("b"):
                assert len(slots) == 2


async def test_a_limit_of_one_is_a_lock_per_key() -> None:
    slots: KeyedSlots[str] = KeyedSlots()
    order: list[str] = []

    async def second() -> None:
        async with slots.hold("a"):
            order.append("second")

    async with slots.hold("a"):
        task = asyncio.create_task(second())
        await settle()
        order.append("first done")
    await task
    assert order == ["first done", "second"]


async def test_map_is_empty_once_idle() -> None:
    slots: KeyedSlots[str] = KeyedSlots(limit=3)
    await asyncio.gather(*(_hold_briefly(slots, key) for key in ["a", "b", "a", "c", "a"]))
    assert len(slots) == 0


async def _hold_briefly(slots: KeyedSlots[str], key: str) -> None:
    async with slots.hold(key):
        await asyncio.sleep(0)


async def test_released_on_exception() -> None:
    slots: KeyedSlots[str] = KeyedSlots(limit=1)
    with pytest.raises(ValueError, match="boom"):
        async with slots.hold("a"):
            raise ValueError("boom")
    assert len(slots) == 0
    async with asyncio.timeout(1), slots.hold("a"):
        assert len(slots) == 1


async def test_a_cancelled_waiter_leaves_no_entry_behind() -> None:
    slots: KeyedSlots[str] = KeyedSlots(limit=1)
    async with slots.hold("a"):
        waiter = asyncio.create_task(_hold_briefly(slots, "a"))
        await settle()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert len(slots) == 1  # the holder's
    assert len(slots) == 0
