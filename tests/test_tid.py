from indexer.atproto.tid import TidClock, decode_micros, encode, is_tid


def test_round_trip_and_known_value() -> None:
    assert decode_micros("3mmoojp7vgo2g") == 1779719008873876  # a rev from the golden events
    assert encode(1779719008873876, 0)[:11] == "3mmoojp7vgo"
    assert decode_micros(encode(123456789, 5)) == 123456789


def test_clock_is_strictly_increasing_and_valid() -> None:
    clock = TidClock(clock_id=7)
    tids = [clock.next() for _ in range(10_000)]
    assert tids == sorted(tids) and len(set(tids)) == len(tids)
    assert all(is_tid(t) for t in tids)


def test_is_tid_rejects_other_keys() -> None:
    assert not any(is_tid(v) for v in ["self", "3mmoojp7vgo2", "3MMOOJP7VGO2G", "zmmoojp7vgo2g", "3mmoojp7vgo21", "3mmoojp7vgo2g\n"])
