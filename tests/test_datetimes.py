import pytest

from indexer.atproto.datetimes import NoTimezone, iso_from_us, us_from_iso

NOW_US = 1_779_719_009_132_431  # 2026-05-25T14:23:29.132431Z
LAST_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z, far past 2**53: a float would lose the last digits


@pytest.mark.parametrize(
    ("us", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (NOW_US, "2026-05-25T14:23:29.132Z"),  # milliseconds, truncated rather than rounded
        (1_779_719_009_999_999, "2026-05-25T14:23:29.999Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (LAST_US, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_iso_from_us_is_utc_milliseconds_and_z(us: int, text: str) -> None:
    assert iso_from_us(us) == text


@pytest.mark.parametrize(
    ("text", "us"),
    [
        ("2026-05-25T14:23:29.132431Z", NOW_US),
        ("2026-05-25T16:23:29.132431+02:00", NOW_US),
        ("2026-05-25T14:23:29.132431-00:00", NOW_US),
        ("2026-05-25T14:23:29Z", 1_779_719_009_000_000),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59.999999Z", -1),
        ("9999-12-31T23:59:59.999999Z", LAST_US),
    ],
)
def test_us_from_iso_is_exact_to_the_microsecond(text: str, us: int) -> None:
    assert us_from_iso(text) == us


def test_round_trip_keeps_milliseconds() -> None:
    assert us_from_iso(iso_from_us(NOW_US)) == 1_779_719_009_132_000
    assert us_from_iso(iso_from_us(LAST_US)) == 253_402_300_799_999_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-05-25T14:23:29", "'2026-05-25T14:23:29' has no timezone"),
        ("2026-05-25", "'2026-05-25' has no timezone"),
    ],
)
def test_a_time_without_timezone_is_no_timezone(text: str, message: str) -> None:
    with pytest.raises(NoTimezone) as caught:
        us_from_iso(text)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "'yesterday' is not an ISO 8601 datetime"),
        ("", "'' is not an ISO 8601 datetime"),
        ("2026-13-01T00:00:00Z", "'2026-13-01T00:00:00Z' is not an ISO 8601 datetime"),
        ("x" * 100, f"'{'x' * 64}' is not an ISO 8601 datetime"),  # the value is cut to 64 characters
    ],
)
def test_what_is_not_a_datetime_is_a_value_error_naming_it(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        us_from_iso(text)
    assert type(caught.value) is ValueError
    assert str(caught.value) == message


@pytest.mark.parametrize(("us", "text"), [(-62135596800000000, "0001-01-01T00:00:00.000Z"), (-30610224000000000, "1000-01-01T00:00:00.000Z"), (-30641760000000000, "0999-01-01T00:00:00.000Z")])
def test_years_before_1000_keep_four_digits(us: int, text: str) -> None:
    assert iso_from_us(us) == text
    assert us_from_iso(text) == us
