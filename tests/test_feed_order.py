"""FeedOrder against a plain sorted list: any run of adds and removes, including long runs of equal sort_us
that straddle block splits, reads back the same descending sequence from any starting point."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appview_api.read import feed_order
from appview_api.read.feed_order import FeedOrder

ops = st.lists(st.tuples(st.booleans(), st.integers(0, 40), st.integers(0, 400)), max_size=300)


@pytest.fixture(autouse=True)
def tiny_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feed_order, "_SPLIT", 4)  # many blocks, and tie runs across them, from few entries


@settings(max_examples=300, deadline=None)
@given(steps=ops, start=st.none() | st.integers(-1, 41))
def test_matches_a_sorted_list(steps: list[tuple[bool, int, int]], start: int | None) -> None:
    order, model = FeedOrder(), set()
    for add, sort_us, doc in steps:
        if add and (sort_us, doc) not in model:
            order.add(sort_us, doc)
            model.add((sort_us, doc))
        elif not add and (sort_us, doc) in model:
            order.remove(sort_us, doc)
            model.discard((sort_us, doc))
    assert len(order) == len(model)
    got = list(order.descending(start))
    expected = sorted((pair for pair in model if start is None or pair[0] <= start), reverse=True)
    assert sorted(got, reverse=True) == expected
    assert [s for s, _ in got] == [s for s, _ in expected]  # descending by sort_us; ties in any order


def test_removing_what_is_not_there_is_a_key_error() -> None:
    order = FeedOrder()
    order.add(5, 1)
    with pytest.raises(KeyError):
        order.remove(5, 2)
    with pytest.raises(KeyError):
        order.remove(4, 1)
    assert list(order.descending()) == [(5, 1)]
