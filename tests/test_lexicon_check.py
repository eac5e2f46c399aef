"""The compiled lexicon checks must give lexrpc's verdicts (lexrpc is the reference implementation)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lexrpc.base import ValidationError

from indexer.atproto import lexicons
from indexer.atproto.lexicon_check import UnsupportedSchema, compile_object

RECORD = lexicons.main_def("app.relay.track")["record"]
CHECK = compile_object(RECORD)

text = st.one_of(
    st.text(max_size=300),
    st.text(alphabet="é𝄞a", min_size=130, max_size=290),  # multi-byte: lengths are UTF-8 bytes
    st.sampled_from(["", "x" * 280, "x" * 281]),
)
DATETIMES = [
    "2026-05-25T14:23:29Z", "2026-05-25T14:23:29.123Z", "2026-05-25T14:23:29.123456789+02:00",
    "2026-05-25T14:23:29-05:30", "2026-05-25T14:23:29", "2026-05-25 14:23:29Z", "2026-05-25", "2026-13-25T14:23:29Z",
    "2026-02-30T10:00:00Z", "yesterday", "", "2026-05-25T25:00:00Z", "2026-05-25T14:23Z", "2026-05-25T14:23:29.Z",
    "2026-05-25T14:23:29+0200", "2026-05-25t14:23:29z", "0000-01-01T00:00:00Z", "2026-05-25T14:23:29.5+00:00",
]
datetimes = st.sampled_from(DATETIMES)
URIS = [
    "https://audio.example/a.mp3", "http://127.0.0.1:8080/audio/x.mp3", "at://did:plc:x/app.relay.track/3k",
    "https://a b", "no scheme", "://x", "1http://x", "mailto:me@example.com", "https://", "", "https://x/" + "a" * 9000,
    "https:///path", "https://?q", "https:#frag", "https://user@host/a", "HTTPS://HOST/A", "urn:isbn:123", "x:", "a:b c",
    "https://host:8443/a?b=c#d", "https://[::1]/a", "https://host/\u00e9", "https://x/" + "a" * 1100,
]
uris = st.sampled_from(URIS)
anything = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2))
VALID = {
    "$type": "app.relay.track", "title": "Song", "artist": "Artist", "album": "Album",
    "audioUrl": "https://audio.example/a.mp3", "fileType": "mp3", "duration": 240, "createdAt": "2026-01-01T00:00:00Z",
}
ABSENT = object()
values = {
    "title": st.one_of(text, anything),
    "artist": st.one_of(text, anything),
    "album": st.one_of(text, anything),
    "audioUrl": st.one_of(uris, anything),
    "fileType": st.one_of(st.sampled_from(["mp3", "wav", "ogg", "flac", "aac", "MP3", ""]), anything),
    "duration": st.one_of(st.integers(-3, 10**9), anything),
    "createdAt": st.one_of(datetimes, anything),
}
mutation = st.sampled_from(sorted(values)).flatmap(
    lambda field: st.tuples(st.just(field), st.one_of(st.just(ABSENT), values[field]))
)


@st.composite
def records(draw: st.DrawFn) -> dict:
    """A valid record with one to three fields replaced by arbitrary values or removed."""
    record = dict(VALID)
    for field, value in draw(st.lists(mutation, min_size=1, max_size=3)):
        if value is ABSENT:
            record.pop(field, None)
        else:
            record[field] = value
    return record


def lexrpc_accepts(record: dict) -> bool:
    try:
        lexicons.validator().validate("app.relay.track", "record", record)
    except ValidationError:
        return False
    return True


@settings(max_examples=1500, deadline=None)
@given(records())
def test_same_verdict_as_lexrpc(record: dict) -> None:
    ours = CHECK(record)
    assert (ours is None) == lexrpc_accepts(record), ours


@pytest.mark.parametrize(("field", "value"), [("createdAt", v) for v in DATETIMES] + [("audioUrl", v) for v in URIS])
def test_every_listed_format_value_gets_lexrpcs_verdict(field: str, value: str) -> None:
    record = {**VALID, field: value}
    assert (CHECK(record) is None) == lexrpc_accepts(record)


def test_valid_record_passes() -> None:
    record = {"title": "t", "artist": "a", "audioUrl": "https://x/a.mp3", "fileType": "flac", "createdAt": "2026-01-01T00:00:00Z"}
    assert CHECK(record) is None and lexrpc_accepts(record)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "array"}, "type 'array': only objects compile"),
        ({"type": "object", "properties": {"a": {"type": "ref", "ref": "#x"}}}, "a: type 'ref' does not compile"),
        ({"type": "object", "properties": {"a": {"type": "string", "maxGraphemes": 3}}}, "a: string rules ['maxGraphemes'] do not compile"),
        ({"type": "object", "properties": {"a": {"type": "string", "format": "did"}}}, "a: format 'did' does not compile"),
        ({"type": "object", "properties": {"a": {"type": "integer", "multipleOf": 2}}}, "a: integer rules ['multipleOf'] do not compile"),
    ],
)
def test_what_it_cannot_check_is_refused_when_compiling(schema: dict, message: str) -> None:
    with pytest.raises(UnsupportedSchema) as caught:
        compile_object(schema)
    assert str(caught.value) == message


def test_names_and_values_from_the_schema_are_data_not_code() -> None:
    name = "a'\"\n) or True #{}"
    schema = {
        "type": "object",
        "required": [name],
        "nullable": ["note"],
        "properties": {
            name: {"type": "string", "maxLength": 3, "enum": ["ab", "abcd", "x'y"]},
            "note": {"type": "string", "const": "'); 1/0 #"},
            "count": {"type": "integer", "minimum": 1, "maximum": 9},
        },
    }
    check = compile_object(schema)
    assert check({}) == f"missing required property {name}"
    assert check({name: "abcd"}) == f"{name}: is longer (4) than maxLength 3"
    assert check({name: "abc"}) == f"{name}: 'abc' is not one of enum values"
    assert check({name: "x'y", "note": None}) is None
    assert check({name: "ab", "note": "x"}) == "note: is not const value '); 1/0 #"
    assert check({name: "ab", "count": 10}) == "count: is higher than maximum 9"
    assert check({name: "ab", "count": None}) == "count: must not be null"
    assert check({name: "ab", "count": True}) == "count: has unexpected type bool"
