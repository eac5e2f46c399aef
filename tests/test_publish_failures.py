"""Every way a publish, update or delete can fail, each with its exact answer and nothing left behind:
no object in storage, no record on the PDS, no row in the local index, no spooled upload.
"""

from __future__ import annotations

import base64
import glob
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from indexer.atproto import tid
from tests.fixtures.pds import LocalPds, PdsAccount
from tests.fixtures.publish import DATA, PUBLISH, PublishService, start_service, write_wav
from tests.fixtures.s3 import S3Server
from tests.servers.pds_proxy import PdsProxy
from tests.servers.tcp_cut import CuttingProxy

pytestmark = pytest.mark.slow  # end to end: real processes and servers

MP3 = DATA / "tone-3s.mp3"
MiB = 1024 * 1024
UPDATE = "app.relay.track.update"
DELETE = "app.relay.track.delete"


def error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["error"], body["message"]


def spooled_uploads() -> list[str]:
    return glob.glob(os.path.join(tempfile.gettempdir(), "relay-upload-*"))


def forged(claims: dict[str, object]) -> str:
    """A JWT with the given claims and a signature nobody made."""
    header = orjson.dumps({"alg": "ES256K", "typ": "at+jwt"})
    return ".".join(b64(part) for part in (header, orjson.dumps(claims), b"x" * 64))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def account(local_pds: LocalPds) -> PdsAccount:
    return local_pds.create_account("fail")


# --- the file -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"just some text, honestly\n" * 40, "not an mp3, wav, ogg or flac file"),
        ((DATA / "tone-3s.flac").read_bytes()[:100], "unreadable flac file: file said 24 bytes, read 10 bytes"),
        (b"", "the file is empty"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00", "unreadable mp3 file: can't sync to MPEG frame"),
    ],
    ids=["text-named-mp3", "truncated-flac", "empty", "id3-header-only"],
)
def test_a_file_that_is_not_audio_is_refused(
    publish_service: PublishService, account: PdsAccount, content: bytes, message: str
) -> None:
    response = publish_service.publish(account, content, filename="song.mp3")

    assert error(response) == (400, "UnsupportedAudio", message)
    assert publish_service.nothing_left(account)
    assert spooled_uploads() == []


def test_a_file_over_the_limit_is_refused(tmp_path: Path, local_pds: LocalPds, account: PdsAccount) -> None:
    with start_service(tmp_path, local_pds, RELAY_MAX_UPLOAD_BYTES=64 * 1024) as service:
        response = service.publish(account, write_wav(tmp_path / "big.wav", 100 * 1024))

        assert error(response) == (413, "PayloadTooLarge", "the upload is larger than 65536 bytes")
        assert service.nothing_left(account)
        assert spooled_uploads() == []


def raw_request(port: int, head: str, body_parts: list[bytes]) -> bytes:
    """Send a request head and some body, never the rest; return whatever the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        for data in body_parts:
            sock.sendall(data)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def test_an_upload_over_the_limit_is_cut_off_while_it_streams(
    tmp_path: Path, local_pds: LocalPds, account: PdsAccount
) -> None:
    """Chunked, so the server cannot know the size up front: it answers 413 though the body never ends."""
    with start_service(tmp_path, local_pds, RELAY_MAX_UPLOAD_BYTES=64 * 1024) as service:
        boundary = "cutoff"
        preamble = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'.encode()
            + write_wav(tmp_path / "head.wav", 4096).read_bytes()
        )
        chunks = [preamble] + [b"\x80" * 32768] * 8  # ~260 KiB of a body that would go on and on
        head = (
            f"POST {PUBLISH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {account.access_jwt}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        answer = raw_request(service.settings.api.port, head, [b"%x\r\n%s\r\n" % (len(c), c) for c in chunks])

        assert answer.startswith(b"HTTP/1.1 413 ")
        assert b'"error":"PayloadTooLarge"' in answer
        assert service.nothing_left(account)
        assert spooled_uploads() == []


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(
    tmp_path: Path, local_pds: LocalPds, account: PdsAccount
) -> None:
    with start_service(tmp_path, local_pds, RELAY_MAX_UPLOAD_BYTES=64 * 1024) as service:
        head = (
            f"POST {PUBLISH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {account.access_jwt}\r\n"
            f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {100 * MiB}\r\n\r\n"
        )
        answer = raw_request(service.settings.api.port, head, [])

        assert answer.startswith(b"HTTP/1.1 413 ")
        assert answer.endswith(b'{"error":"PayloadTooLarge","message":"the upload is larger than 65536 bytes"}')
        assert service.nothing_left(account)


# --- the fields -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"title": None}, "missing required property title"),
        ({"artist": None}, "missing required property artist"),
        ({"title": "é" * 140 + "x"}, "is longer (281) than maxLength 280"),
        ({"artist": "a" * 281}, "is longer (281) than maxLength 280"),
        ({"album": "a" * 281}, "is longer (281) than maxLength 280"),
        ({"title": " \t"}, "title must not be blank"),
        ({"genre": "jazz"}, "unknown form field 'genre'"),
        ({"title": "t" * 5000}, "form field 'title' is longer than 4096 bytes"),
    ],
)
def test_fields_are_held_to_the_lexicon(
    publish_service: PublishService, account: PdsAccount, fields: dict[str, str | None], message: str
) -> None:
    data = {"title": "T", "artist": "A"} | fields
    response = publish_service.client.post(
        PUBLISH,
        data={k: v for k, v in data.items() if v is not None},
        files={"audio": ("a.mp3", MP3.read_bytes())},
        headers=account.auth_headers,
    )

    status, name, text = error(response)
    assert (status, name) == (400, "InvalidRequest")
    assert text.endswith(message)
    assert publish_service.nothing_left(account)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data": {"title": "T", "artist": "A"}, "files": {"x": ("t.txt", b"")}}, "unknown form field 'x'"),
        ({"json": {"title": "T", "artist": "A"}}, "the body must be multipart/form-data with a boundary"),
        ({"files": {"title": (None, b"T"), "artist": (None, b"A")}}, "the form has no 'audio' file part"),
    ],
)
def test_a_request_that_is_not_a_publish_form_is_refused(
    publish_service: PublishService, account: PdsAccount, kwargs: dict[str, object], message: str
) -> None:
    response = publish_service.client.post(PUBLISH, headers=account.auth_headers, **kwargs)  # type: ignore[arg-type]

    assert error(response) == (400, "InvalidRequest", message)
    assert publish_service.nothing_left(account)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"rkey": "not-a-tid"}, "is invalid for format tid"),
        ({"rkey": tid.encode(1_000_000_000 * 1_000_000, 1)}, "rkey must be a TID minted within the last 24 hours"),
        ({"dryRun": "yes"}, "parameter 'dryRun' must be true or false, got 'yes'"),
        ({"limit": "3"}, "unknown parameter 'limit'"),
    ],
)
def test_bad_parameters_are_refused(
    publish_service: PublishService, account: PdsAccount, params: dict[str, str], message: str
) -> None:
    status, name, text = error(publish_service.publish(account, MP3, params=params))

    assert (status, name) == (400, "InvalidRequest")
    assert text.endswith(message)
    assert publish_service.nothing_left(account)


# --- the token ---------------------------------------------------------------------------------------------


UNKNOWN_DID = "did:plc:" + "z" * 24
NO_BEARER = (401, "AuthRequired", "send 'Authorization: Bearer <your PDS access token>'")
REFUSED = (401, "AuthRequired", "the PDS refused the token: InvalidToken")


@pytest.mark.parametrize(
    ("make_header", "expected"),
    [
        (lambda a: None, NO_BEARER),
        (lambda a: f"Basic {a.access_jwt}", NO_BEARER),
        (lambda a: "Bearer not-a-jwt", (401, "AuthRequired", "the bearer token is not a JWT")),
        (lambda a: "Bearer " + forged({"sub": a.did, "exp": time.time() + 600}), REFUSED),
        (
            lambda a: "Bearer " + forged({"sub": a.did, "exp": time.time() - 1}),
            (401, "ExpiredToken", "the access token has expired: refresh the session"),
        ),
        (lambda a: f"Bearer {a.refresh_jwt}", REFUSED),
        (
            lambda a: "Bearer " + forged({"sub": UNKNOWN_DID}),
            (401, "AuthRequired", f"cannot verify the token: {UNKNOWN_DID}: DID document fetch answered 404"),
        ),
    ],
    ids=["missing", "basic", "not-jwt", "forged", "expired", "refresh-token", "unknown-did"],
)
def test_tokens_that_prove_nothing_are_refused_by_every_write(
    publish_service: PublishService,
    account: PdsAccount,
    make_header: Callable[[PdsAccount], str | None],
    expected: tuple[int, str, str],
) -> None:
    header = make_header(account)
    headers = {"Authorization": header} if header else {}
    uri = f"at://{account.did}/app.relay.track/3lbbbbbbbbbb2"
    post = publish_service.client.post
    responses = [
        post(PUBLISH, files={"audio": ("a.mp3", MP3.read_bytes())}, data={"title": "T", "artist": "A"}, headers=headers),
        post(f"/xrpc/{UPDATE}", json={"uri": uri, "title": "x"}, headers=headers),
        post(f"/xrpc/{DELETE}", json={"uri": uri}, headers=headers),
    ]

    assert [error(r) for r in responses] == [expected] * 3
    assert publish_service.nothing_left(account)


def test_another_accounts_token_cannot_claim_this_account(
    publish_service: PublishService, local_pds: LocalPds, account: PdsAccount
) -> None:
    """A real token from the same PDS, in a JWT whose `sub` was rewritten: the signature no longer holds."""
    other = local_pds.create_account("other")
    header, _, signature = other.access_jwt.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(other.access_jwt.split(".")[1] + "=="))
    payload = base64.urlsafe_b64encode(orjson.dumps({**claims, "sub": account.did})).rstrip(b"=").decode()

    response = publish_service.publish(None, MP3, headers={"Authorization": f"Bearer {header}.{payload}.{signature}"})

    assert error(response) == (401, "AuthRequired", "the PDS refused the token: InvalidToken")
    assert publish_service.nothing_left(account) and publish_service.pds_records(other) == []


# --- owners, missing tracks, bad updates -----------------------------------------------------------------------


def test_only_the_owner_may_update_or_delete(
    publish_service: PublishService, local_pds: LocalPds, account: PdsAccount
) -> None:
    published = publish_service.publish(account, MP3).json()
    intruder = local_pds.create_account("intruder")
    before = (publish_service.pds_records(account), publish_service.objects(), publish_service.rows())

    for nsid, body in ((UPDATE, {"uri": published["uri"], "title": "Mine now"}), (DELETE, {"uri": published["uri"]})):
        assert error(publish_service.call(nsid, intruder, body)) == (403, "Forbidden", "only the track's owner may change it")
    assert (publish_service.pds_records(account), publish_service.objects(), publish_service.rows()) == before


def test_a_track_that_is_not_there_is_not_found(publish_service: PublishService, account: PdsAccount) -> None:
    rkey = tid.TidClock().next()
    uri = f"at://{account.did}/app.relay.track/{rkey}"
    expected = (404, "TrackNotFound", f"no track {rkey} in {account.did}'s repository")

    assert error(publish_service.call(UPDATE, account, {"uri": uri, "title": "x"})) == expected
    assert error(publish_service.call(DELETE, account, {"uri": uri})) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"title": "x" * 281}, "is longer (281) than maxLength 280"),
        ({"artist": None}, "is not nullable"),
        ({"title": ""}, "title must not be blank"),
        ({"audioUrl": "https://evil.test/x.mp3"}, "unknown field 'audioUrl': only uri, title, artist, album can be given"),
        ({"uri": "at://did:plc:x/app.bsky.feed.post/3lbbbbbbbbbb2"}, "is not the at:// URI of an app.relay.track record"),
    ],
)
def test_a_bad_update_changes_nothing(
    publish_service: PublishService, account: PdsAccount, body: dict[str, object], message: str
) -> None:
    published = publish_service.publish(account, MP3).json()
    before = (publish_service.pds_records(account), publish_service.rows())

    status, name, text = error(publish_service.call(UPDATE, account, {"uri": published["uri"], **body}))

    assert (status, name) == (400, "InvalidRequest")
    assert text.endswith(message)
    assert (publish_service.pds_records(account), publish_service.rows()) == before


def test_update_and_delete_bodies_must_be_json_objects(publish_service: PublishService, account: PdsAccount) -> None:
    post = publish_service.client.post
    headers = account.auth_headers
    assert error(post(f"/xrpc/{DELETE}", content=b"uri=x", headers=headers)) == (
        400, "InvalidRequest", "the body must be application/json"
    )
    json_headers = {**headers, "Content-Type": "application/json"}
    assert error(post(f"/xrpc/{DELETE}", content=b"{nope", headers=json_headers)) == (400, "InvalidRequest", "the body is not JSON")
    assert error(post(f"/xrpc/{DELETE}", content=b"[]", headers=json_headers)) == (400, "InvalidRequest", "the body must be a JSON object")
    assert error(post(f"/xrpc/{DELETE}", content=b" " * 70_000, headers=json_headers)) == (
        413, "PayloadTooLarge", "the body is larger than 65536 bytes"
    )


# --- rate limit ------------------------------------------------------------------------------------------------


def test_writes_are_rate_limited_per_account(tmp_path: Path, local_pds: LocalPds, account: PdsAccount) -> None:
    with start_service(tmp_path, local_pds, RELAY_PUBLISH_RATE_PER_MINUTE=2) as service:
        dry = {"dryRun": "true"}
        assert [service.publish(account, MP3, params=dry).status_code for _ in range(2)] == [200, 200]

        limited = service.publish(account, MP3, params=dry)

        assert error(limited) == (429, "RateLimitExceeded", "too many writes: retry in 30 s")
        assert limited.headers["retry-after"] == "30"
        assert service.publish(local_pds.create_account("fresh"), MP3, params=dry).status_code == 200
        assert service.nothing_left(account)


# --- the PDS failing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("drop", (502, "PdsUnavailable", "the PDS at {pds} is unreachable on com.atproto.repo.putRecord: RemoteProtocolError")),
        (503, (503, "PdsUnavailable", "the PDS at {pds} answered 503 on com.atproto.repo.putRecord")),
        (500, (502, "PdsUnavailable", "the PDS at {pds} answered 500 on com.atproto.repo.putRecord")),
        (400, (502, "PdsRejected", "the PDS refused the write: Injected: fault injected by the test")),
    ],
)
def test_the_pds_failing_mid_publish_leaves_nothing(
    tmp_path: Path, local_pds: LocalPds, account: PdsAccount, fault: str | int, expected: tuple[int, str, str]
) -> None:
    with PdsProxy(local_pds.pds_url, local_pds.plc_url) as proxy, start_service(
        tmp_path, local_pds, RELAY_PLC_URL=proxy.url
    ) as service:
        proxy.faults["com.atproto.repo.putRecord"] = fault

        response = service.publish(account, MP3)

        status, name, message = expected
        assert error(response) == (status, name, message.format(pds=proxy.url))
        assert proxy.calls == [f"/{account.did}", "com.atproto.server.getSession", "com.atproto.repo.putRecord"]
        assert service.nothing_left(account)


def test_a_failed_publish_keeps_an_object_another_track_uses(
    tmp_path: Path, local_pds: LocalPds, account: PdsAccount
) -> None:
    with PdsProxy(local_pds.pds_url, local_pds.plc_url) as proxy, start_service(
        tmp_path, local_pds, RELAY_PLC_URL=proxy.url
    ) as service:
        first = service.publish(account, MP3).json()
        proxy.faults["com.atproto.repo.putRecord"] = "drop"

        assert service.publish(account, MP3).status_code == 502
        assert service.objects() == [first["record"]["audioUrl"].rsplit("/", 1)[1]]
        assert [r["uri"] for r in service.pds_records(account)] == [first["uri"]]
        assert len(service.rows()) == 1


def test_the_pds_down_at_sign_in_stores_nothing(tmp_path: Path, local_pds: LocalPds, account: PdsAccount) -> None:
    with PdsProxy(local_pds.pds_url, local_pds.plc_url) as proxy, start_service(
        tmp_path, local_pds, RELAY_PLC_URL=proxy.url
    ) as service:
        proxy.faults["com.atproto.server.getSession"] = "drop"

        response = service.publish(account, MP3)

        assert error(response) == (
            502, "PdsUnavailable", f"the PDS at {proxy.url} is unreachable on com.atproto.server.getSession: RemoteProtocolError"
        )
        assert service.nothing_left(account)


def test_a_concurrent_change_makes_an_update_fail_instead_of_losing_it(
    tmp_path: Path, local_pds: LocalPds, account: PdsAccount
) -> None:
    with PdsProxy(local_pds.pds_url, local_pds.plc_url) as proxy, start_service(
        tmp_path, local_pds, RELAY_PLC_URL=proxy.url
    ) as service:
        published = service.publish(account, MP3).json()
        rkey = published["uri"].rsplit("/", 1)[1]
        [row] = service.rows()
        theirs = {**published["record"], "title": "Written elsewhere meanwhile"}

        def concurrent_writer() -> None:
            proxy.before.clear()
            httpx.post(
                f"{local_pds.pds_url}/xrpc/com.atproto.repo.putRecord",
                json={"repo": account.did, "collection": "app.relay.track", "rkey": rkey, "record": theirs},
                headers=account.auth_headers,
            ).raise_for_status()

        proxy.before["com.atproto.repo.putRecord"] = concurrent_writer

        response = service.call(UPDATE, account, {"uri": published["uri"], "title": "Mine"})

        assert error(response) == (409, "InvalidSwap", "the track changed meanwhile: read it again and retry")
        assert [r["value"] for r in service.pds_records(account)] == [theirs]
        assert service.rows() == [row]


def test_a_failed_delete_keeps_the_record_and_the_audio(tmp_path: Path, local_pds: LocalPds, account: PdsAccount) -> None:
    with PdsProxy(local_pds.pds_url, local_pds.plc_url) as proxy, start_service(
        tmp_path, local_pds, RELAY_PLC_URL=proxy.url
    ) as service:
        published = service.publish(account, MP3).json()
        before = (service.pds_records(account), service.objects(), service.rows())
        proxy.faults["com.atproto.repo.deleteRecord"] = "drop"

        response = service.call(DELETE, account, {"uri": published["uri"]})

        assert error(response) == (
            502, "PdsUnavailable", f"the PDS at {proxy.url} is unreachable on com.atproto.repo.deleteRecord: RemoteProtocolError"
        )
        assert (service.pds_records(account), service.objects(), service.rows()) == before


# --- storage failing -------------------------------------------------------------------------------------------


def test_storage_going_down_mid_upload_writes_no_record(
    tmp_path: Path, local_pds: LocalPds, account: PdsAccount, s3_server: S3Server, r2_overrides: dict[str, str]
) -> None:
    upstream_port = int(s3_server.endpoint_url.rsplit(":", 1)[1])
    with CuttingProxy(upstream_port, limit=MiB) as cut, start_service(
        tmp_path, local_pds, **{**r2_overrides, "R2_ENDPOINT_URL": cut.url}
    ) as service:
        response = service.publish(account, write_wav(tmp_path / "big.wav", 12 * MiB))

        assert error(response) == (503, "StorageUnavailable", "the audio could not be stored; nothing was written")
        assert cut.cuts > 0
        assert service.nothing_left(account)
        bucket = r2_overrides["R2_BUCKET_NAME"]
        assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        assert spooled_uploads() == []


def test_local_storage_that_cannot_be_written_writes_no_record(
    tmp_path: Path, local_pds: LocalPds, account: PdsAccount
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("in the way")
    with start_service(tmp_path, local_pds, RELAY_AUDIO_DIR=blocked) as service:
        response = service.publish(account, MP3)

        assert error(response) == (503, "StorageUnavailable", "the audio could not be stored; nothing was written")
        assert service.pds_records(account) == [] and service.rows() == []


# --- strangers' tokens ----------------------------------------------------------------------------------


def stranger(n: int) -> str:
    return "did:plc:" + tid.encode(1_700_000_000_000_000 + n, 0)[:13].ljust(24, "z")


def test_forged_tokens_cost_one_document_fetch_per_did_and_a_capped_number_in_all(
    tmp_path: Path, local_pds: LocalPds
) -> None:
    """400 forged tokens, 100 of them for one DID: that DID is fetched once (its refusal is cached), and
    the others only until the minute's budget of lookups for unverified tokens is spent."""
    with PdsProxy(local_pds.pds_url, local_pds.plc_url) as plc, start_service(
        tmp_path, local_pds, RELAY_PLC_URL=plc.url, RELAY_UNAUTHENTICATED_LOOKUPS_PER_MINUTE=50
    ) as service:
        dids = [stranger(0)] * 100 + [stranger(n) for n in range(1, 301)]
        started = time.monotonic()
        answers = [
            service.client.post(PUBLISH, headers={"Authorization": "Bearer " + forged({"sub": did})}) for did in dids
        ]
        refilled = int((time.monotonic() - started) * 50 / 60)  # the budget refills as the minute goes by
        fetched = [call for call in plc.calls if call.startswith("/did:")]
    assert [a.status_code for a in answers[:100]] == [401] * 100
    assert fetched.count(f"/{stranger(0)}") == 1
    assert 50 <= len(fetched) <= 50 + refilled  # the budget, and not one fetch more
    assert {a.status_code for a in answers[100:]} == {401, 429}
    refused = [a for a in answers[100:] if a.status_code == 429]
    assert len(refused) == 300 - (len(fetched) - 1)
    assert refused[0].json()["error"] == "RateLimitExceeded"
    assert refused[0].json()["message"].startswith("too many identity lookups for unverified tokens: retry in ")
    assert int(refused[0].headers["retry-after"]) >= 1


@pytest.mark.parametrize("did", ["did:web:169.254.169.254", "did:web:10.0.0.1", "did:web:127.0.0.1%3A9"])
def test_a_token_naming_a_did_web_on_a_private_address_is_a_401_and_nothing_is_dialled(
    tmp_path: Path, local_pds: LocalPds, did: str, caplog: pytest.LogCaptureFixture
) -> None:
    with start_service(tmp_path, local_pds, RELAY_ALLOW_INSECURE=False) as service:
        response = service.client.post(PUBLISH, headers={"Authorization": "Bearer " + forged({"sub": did})})
    host = did.removeprefix("did:web:").replace("%3A", ":")
    kind = {"169.254.169.254": "link-local", "10.0.0.1": "private", "127.0.0.1:9": "loopback"}[host]
    assert (response.status_code, response.json()["error"]) == (401, "AuthRequired")
    assert response.json()["message"].startswith(f"cannot verify the token: {did}: the DID document's host is refused: ")
    assert f"is {kind}" in response.json()["message"]
    assert not [r for r in caplog.records if r.levelname == "ERROR" or r.exc_info]


# --- what an upload may take: time, the account's quota, the service's budget ----------------------------


def test_an_upload_that_stops_arriving_is_a_408_and_its_spool_is_removed(
    tmp_path: Path, local_pds: LocalPds, account: PdsAccount
) -> None:
    with start_service(tmp_path, local_pds, RELAY_UPLOAD_READ_TIMEOUT_SECONDS=1) as service:
        boundary = "stall"
        preamble = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.wav\"\r\n\r\n".encode()
            + write_wav(tmp_path / "a.wav", 20_000).read_bytes()[:10_000]
        )
        head = (
            f"POST {PUBLISH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {account.access_jwt}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(preamble) + 50_000}\r\n\r\n"
        )
        started = time.monotonic()
        answer = raw_request(service.settings.api.port, head, [preamble])  # and then nothing more
        waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert answer.endswith(b'{"error":"RequestTimeout","message":"no bytes of the upload arrived for 1 s"}')
        assert waited < 20  # the server gave up on its own, long before the client did
        assert service.nothing_left(account)
        assert spooled_uploads() == []


def test_an_accounts_audio_is_held_to_its_quota(tmp_path: Path, local_pds: LocalPds, account: PdsAccount) -> None:
    first, second = write_wav(tmp_path / "1.wav", 100_000, seed=1), write_wav(tmp_path / "2.wav", 100_000, seed=2)
    with start_service(tmp_path, local_pds, RELAY_ACCOUNT_QUOTA_BYTES=150_000) as service:
        published = service.publish(account, first)
        assert published.status_code == 200, published.text
        refused = service.publish(account, second)
        assert refused.status_code == 413
        assert refused.json() == {
            "error": "QuotaExceeded",
            "message": "the account's audio would exceed its quota of 150000 bytes (100000 bytes used)",
        }
        assert len(service.objects()) == 1 and len(service.pds_records(account)) == 1
        # A second account has a quota of its own; and once the first track goes, the room comes back.
        other = local_pds.create_account("quota2")
        assert service.publish(other, second).status_code == 200
        assert service.call("app.relay.track.delete", account, {"uri": published.json()["uri"]}).status_code == 200
        assert service.publish(account, first).status_code == 200


def test_the_services_upload_budget_is_shared_by_every_account(tmp_path: Path, local_pds: LocalPds) -> None:
    """More accounts (a stranger's PDS can make as many as it likes) do not buy more bytes."""
    files = [write_wav(tmp_path / f"{n}.wav", 100_000, seed=n) for n in range(3)]
    accounts = [local_pds.create_account(f"budget{n}") for n in range(3)]
    with start_service(tmp_path, local_pds, RELAY_UPLOAD_BUDGET_BYTES_PER_HOUR=250_000) as service:
        assert [service.publish(a, f).status_code for a, f in zip(accounts[:2], files[:2], strict=True)] == [200, 200]
        refused = service.publish(accounts[2], files[2])
        assert refused.status_code == 429
        assert refused.json()["error"] == "RateLimitExceeded"
        assert refused.json()["message"].startswith(
            "too many uploads: the service's upload budget for the hour is spent: retry in "
        )
        assert int(refused.headers["retry-after"]) > 60
        assert service.pds_records(accounts[2]) == [] and len(service.objects()) == 2
        assert spooled_uploads() == []
