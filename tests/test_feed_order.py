"""FeedOrder against a plain sorted list: any run of adds and removes, including long runs of equal sort_us
that straddle block splits, reads back the same descending sequence from any starting point."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appview_api.read import feed_order
from appview_api.read.feed_order import FeedOrder

# (add?, sort_us, tiebreak): few sort_us values, so most entries tie on it; the tiebreak is unique per doc.
ops = st.lists(st.tuples(st.booleans(), st.integers(0, 8), st.integers(0, 400)), max_size=300)


@pytest.fixture(autouse=True)
def tiny_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feed_order, "_SPLIT", 4)  # many blocks, and tie runs across them, from few entries


@settings(max_examples=300, deadline=None)
@given(steps=ops, start=st.none() | st.tuples(st.integers(-1, 9), st.integers(-1, 401)))
def test_matches_a_sorted_list(steps: list[tuple[bool, int, int]], start: tuple[int, int] | None) -> None:
    order, model = FeedOrder(), {}
    for add, sort_us, doc in steps:
        tiebreak = doc * 7919 % 401  # unique per doc, unrelated to its number
        if add and doc not in model:
            order.add(sort_us, tiebreak, doc)
            model[doc] = (sort_us, tiebreak)
        elif not add and model.get(doc) == (sort_us, tiebreak):
            order.remove(sort_us, tiebreak, doc)
            del model[doc]
    assert len(order) == len(model)
    expected = [doc for doc, key in sorted(model.items(), key=lambda item: item[1], reverse=True) if start is None or key < start]
    assert list(order.descending(start)) == expected


def test_removing_what_is_not_there_is_a_key_error() -> None:
    order = FeedOrder()
    order.add(5, 3, 1)
    with pytest.raises(KeyError):
        order.remove(5, 3, 2)
    with pytest.raises(KeyError):
        order.remove(4, 3, 1)
    with pytest.raises(KeyError):
        order.remove(5, 2, 1)
    assert list(order.descending()) == [1]
    assert list(order.descending((5, 3))) == [] and list(order.descending((5, 4))) == [1]
