import pytest

from indexer.atproto.syntax import MAX_DID_LENGTH, MAX_HANDLE_LENGTH, is_did, is_handle, is_record_key
from indexer.atproto.uri import RecordUri, parse_record_uri, record_uri

DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
RKEY = "3mmoojp7etg2g"
LABEL = "a" * 63
LONGEST_HANDLE = f"{LABEL}.{LABEL}.{LABEL}.{'a' * 61}"  # 253 characters


def test_record_uri_defaults_to_the_track_collection() -> None:
    assert record_uri(DID, RKEY) == f"at://{DID}/app.relay.track/{RKEY}"
    assert record_uri(DID, "self", "app.bsky.actor.profile") == f"at://{DID}/app.bsky.actor.profile/self"


@pytest.mark.parametrize(
    ("uri", "parts"),
    [
        (f"at://{DID}/app.relay.track/{RKEY}", (DID, "app.relay.track", RKEY)),
        (f"at://alice.bsky.social/app.relay.track/{RKEY}", ("alice.bsky.social", "app.relay.track", RKEY)),
        ("at://did:web:example.com/app.bsky.actor.profile/self", ("did:web:example.com", "app.bsky.actor.profile", "self")),
        (f"at://{DID}/app.relay.track/...", (DID, "app.relay.track", "...")),
    ],
)
def test_parse_record_uri_splits_a_record_uri(uri: str, parts: tuple[str, str, str]) -> None:
    parsed = parse_record_uri(uri)
    assert parsed == RecordUri(*parts)
    assert str(parsed) == uri


@pytest.mark.parametrize(
    "uri",
    [
        f"https://{DID}/app.relay.track/{RKEY}",
        f"AT://{DID}/app.relay.track/{RKEY}",
        f"at://{DID}/app.relay.track",
        f"at://{DID}",
        f"at://{DID}/app.relay.track/{RKEY}/extra",
        f"at://{DID}/app.relay.track/{RKEY}/",
        f"at://{DID}//{RKEY}",
        f"at://{DID}/app.relay.track/",
        f"at://{DID}/app.relay.track/.",
        f"at://{DID}/app.relay.track/..",
        f"at://{DID}/app.relay.track/{RKEY}\n",
        f"at://{DID}/app.relay.track/{RKEY}?x=1",
        f"at:///app.relay.track/{RKEY}",
        f"at://not_a_handle/app.relay.track/{RKEY}",
        f"at://did:plc:abc:/app.relay.track/{RKEY}",
        f"at://{DID}/app.relay.track/{'a' * 513}",
    ],
)
def test_parse_record_uri_refuses_what_is_not_a_record_uri(uri: str) -> None:
    assert parse_record_uri(uri) is None


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (DID, True),
        ("did:web:example.com", True),
        ("did:web:example.com%3A8080", True),
        ("did:plc:" + "a" * (MAX_DID_LENGTH - 8), True),
        ("did:plc:" + "a" * (MAX_DID_LENGTH - 7), False),  # one over the limit
        (DID + "\n", False),
        ("did:PLC:abc", False),  # the method is lowercase
        ("did:plc:", False),
        ("did:plc:abc:", False),  # may not end with ':' or '%'
        ("did:plc:abc%", False),
        ("did:plc:a b", False),
        ("alice.bsky.social", False),
        ("", False),
    ],
)
def test_is_did(value: str, valid: bool) -> None:
    assert is_did(value) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("alice.bsky.social", True),
        ("Alice.Bsky.Social", True),
        ("xn--ls8h.test", True),
        (LONGEST_HANDLE, True),
        (LONGEST_HANDLE + "a", False),  # one over MAX_HANDLE_LENGTH
        (f"{'a' * 64}.com", False),  # a label is at most 63
        ("alice", False),  # at least two labels
        ("alice.123", False),  # the last label starts with a letter
        ("-alice.com", False),
        ("alice-.com", False),
        ("alice.bsky.social.", False),
        ("alice.bsky.social\n", False),
        ("alice..social", False),
        ("al_ice.com", False),
        (DID, False),
    ],
)
def test_is_handle(value: str, valid: bool) -> None:
    assert is_handle(value) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (RKEY, True),
        ("self", True),
        ("~:.-_", True),
        ("...", True),
        ("a" * 512, True),
        ("a" * 513, False),
        (".", False),
        ("..", False),
        ("", False),
        ("a/b", False),
        ("a b", False),
        (RKEY + "\n", False),
        ("é", False),
    ],
)
def test_is_record_key(value: str, valid: bool) -> None:
    assert is_record_key(value) is valid


def test_longest_handle_is_the_limit() -> None:
    assert len(LONGEST_HANDLE) == MAX_HANDLE_LENGTH == 253
