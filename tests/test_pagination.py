import pytest

from appview_api.errors import InvalidRequest
from appview_api.read.pagination import CursorCodec

REFUSED = "cursor is malformed or was not issued for this query"
FEED_KEY = (1_779_719_009_000_000, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "3mmoojp7etg2g")
FEED_SHAPE = (int, str, str)
codec = CursorCodec(b"s3cret")


def refused(cursor: str, scope: str = "feed", shape: tuple[type, ...] = FEED_SHAPE, by: CursorCodec = codec) -> str:
    with pytest.raises(InvalidRequest) as caught:
        by.decode(scope, cursor, shape)
    return caught.value.reason


def test_round_trip() -> None:
    cursor = codec.encode("feed", FEED_KEY)
    assert codec.decode("feed", cursor, FEED_SHAPE) == FEED_KEY
    assert codec.decode("search:blue", codec.encode("search:blue", (5, 7, "a", "b")), (int, int, str, str)) == (5, 7, "a", "b")


def test_cursor_is_url_safe_and_the_same_for_the_same_key() -> None:
    cursor = codec.encode("feed", FEED_KEY)
    assert cursor == codec.encode("feed", FEED_KEY)
    assert cursor.count(".") == 1
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def test_a_cursor_of_another_scope_is_refused() -> None:
    assert refused(codec.encode("actor:did:plc:a", FEED_KEY)) == REFUSED


def test_a_cursor_signed_with_another_secret_is_refused() -> None:
    assert refused(CursorCodec(b"other").encode("feed", FEED_KEY)) == REFUSED


def test_a_tampered_tag_is_refused() -> None:
    body, _, tag = codec.encode("feed", FEED_KEY).partition(".")
    flipped = tag[:-1] + ("A" if tag[-1] != "A" else "B")
    assert refused(f"{body}.{flipped}") == REFUSED
    assert refused(f"{body}.") == REFUSED
    assert refused(body) == REFUSED


def test_another_key_under_a_valid_tag_is_refused() -> None:
    _, _, tag = codec.encode("feed", FEED_KEY).partition(".")
    forged, _, _ = codec.encode("feed", (0, *FEED_KEY[1:])).partition(".")
    assert refused(f"{forged}.{tag}") == REFUSED


@pytest.mark.parametrize(
    ("key", "shape"),
    [
        (FEED_KEY, (int, str)),
        (FEED_KEY, (str, str, str)),
        (FEED_KEY[:2], FEED_SHAPE),
        ((True, "a", "b"), FEED_SHAPE),  # a JSON boolean is not an integer
        ((1.5, "a", "b"), FEED_SHAPE),
    ],
)
def test_a_key_of_the_wrong_shape_is_refused(key: tuple, shape: tuple[type, ...]) -> None:
    assert refused(codec.encode("feed", key), shape=shape) == REFUSED


@pytest.mark.parametrize("cursor", ["", ".", "a.b", "not base64!.x", "é.é", "WzEsMl0.ÿÿÿÿ", "١٢٣.١٢٣"])
def test_garbage_and_non_ascii_are_refused(cursor: str) -> None:
    assert refused(cursor) == REFUSED


@pytest.mark.parametrize("suffix", ["!!", "=", "~"])
def test_only_the_one_spelling_of_a_cursor_is_accepted(suffix: str) -> None:
    """base64 decoders skip what is not base64; a cursor with junk would decode, and key the cache anew."""
    assert refused(codec.encode("feed", FEED_KEY) + suffix) == REFUSED
