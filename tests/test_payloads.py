"""The catalog's payload store: what goes in comes out, through retirements, compaction and compression."""

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from appview_api.read import payloads
from appview_api.read.payloads import Payloads
from appview_api.read.views import payload


@pytest.fixture(autouse=True)
def small_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(payloads, "_COMPACT_AFTER", 0)  # compact as soon as holes outweigh live bytes
    monkeypatch.setattr(payloads, "_TRAIN_AFTER", 200)


@given(st.lists(st.tuples(st.binary(max_size=40), st.booleans()), max_size=60))
def test_each_live_payload_reads_back_whatever_was_retired_and_compacted(steps: list[tuple[bytes, bool]]) -> None:
    store, live = Payloads(), {}
    for doc, (stored, retire_one) in enumerate(steps):
        store.append(stored)
        live[doc] = stored
        if retire_one and live:
            gone = min(live)
            store.retire(gone)
            del live[gone]
        assert {d: store[d] for d in live} == live


def test_payloads_are_compressed_once_there_are_enough_to_learn_from() -> None:
    store = Payloads()
    made = [
        payload(f"bafyreicid{n:040d}", f"Title {n}", f"Artist {n % 17}", None, f"https://cdn.example/{n:064x}.mp3",
                "mp3", n % 300, "2026-01-01T00:00:00.000Z", 1_780_000_000_000_000 + n)
        for n in range(1000)
    ]
    for doc, stored in enumerate(made):
        store.append(stored)
        if doc % 3 == 0:
            store.retire(doc)
    assert store._compress is not None
    assert all(store[doc] == stored for doc, stored in enumerate(made) if doc % 3)
    assert orjson.loads(store[1])[1] == "Title 1"
    assert len(store._data) < sum(len(stored) for doc, stored in enumerate(made) if doc % 3) * 0.6
