"""AudioChecker against real local servers; the public internet is faked at the wire (tests.fixtures.audio)."""

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import REGISTRY

from indexer.db.rows import AudioResult, AudioState
from indexer.net.audio_check import AudioChecker, judge
from tests.builders import make_settings
from tests.fixtures.audio import FAKE_PUBLIC_IP, DialRecorder, FakeResolver, SelfSignedCert
from tests.servers.audio import AudioServer

V, UNAVAILABLE, UNREACHABLE, REFUSED = (
    AudioState.VERIFIED,
    AudioState.UNAVAILABLE,
    AudioState.UNREACHABLE,
    AudioState.REFUSED,
)
INSECURE: dict[str, object] = {"RELAY_ALLOW_INSECURE": True, "RELAY_AUDIO_RETRIES": 3, "RELAY_AUDIO_TIMEOUT_SECONDS": 2.0}
SECURE = {**INSECURE, "RELAY_ALLOW_INSECURE": False}

MakeChecker = Callable[..., AudioChecker]


@pytest.fixture
async def make_checker(fake_resolver: FakeResolver, dial_recorder: DialRecorder) -> AsyncIterator[MakeChecker]:
    checkers: list[AudioChecker] = []

    def make(env: dict[str, object] = INSECURE) -> AudioChecker:
        settings = make_settings(env)
        checker = AudioChecker(
            settings.audio, settings.net, resolver=fake_resolver, network_backend=dial_recorder, retry_base_seconds=0.001
        )
        checkers.append(checker)
        return checker

    yield make
    for checker in checkers:
        await checker.aclose()


def loopback_only(dial_recorder: DialRecorder, port: int) -> bool:
    return bool(dial_recorder.dials) and all(dial == ("127.0.0.1", port) for dial in dial_recorder.dials)


@pytest.mark.parametrize(
    ("status", "content_type", "state", "reason"),
    [
        (200, "audio/mpeg", V, "HTTP 200 audio/mpeg"),
        (206, "Audio/FLAC; rate=44100", V, "HTTP 206 audio/flac"),
        (200, "application/octet-stream", V, "HTTP 200 application/octet-stream"),
        (200, "text/html; charset=utf-8", UNAVAILABLE, "content type 'text/html' is not audio"),
        (200, "video/mp4", UNAVAILABLE, "content type 'video/mp4' is not audio"),
        (200, None, UNAVAILABLE, "no content type"),
        (204, None, UNAVAILABLE, "unexpected HTTP 204"),
        (304, None, UNAVAILABLE, "unexpected HTTP 304"),
        (404, "text/html", UNAVAILABLE, "HTTP 404: no such file"),
        (410, None, UNAVAILABLE, "HTTP 410: no such file"),
        (403, None, UNAVAILABLE, "unexpected HTTP 403"),
        (451, None, UNAVAILABLE, "unexpected HTTP 451"),
        (408, None, UNREACHABLE, "HTTP 408"),
        (429, None, UNREACHABLE, "HTTP 429"),
        (500, None, UNREACHABLE, "HTTP 500"),
        (503, "text/html", UNREACHABLE, "HTTP 503"),
    ],
)
def test_judge(status: int, content_type: str | None, state: AudioState, reason: str) -> None:
    assert judge(status, content_type) == (state, reason)


@pytest.mark.parametrize(
    ("path", "expected", "hits"),
    [
        ("/audio/a.mp3", (V, "HTTP 200 audio/mpeg", 200, "audio/mpeg"), 1),
        ("/octet/a.bin", (V, "HTTP 200 application/octet-stream", 200, "application/octet-stream"), 1),
        ("/html/a", (UNAVAILABLE, "content type 'text/html' is not audio", 200, "text/html; charset=utf-8"), 1),
        ("/bare/a", (UNAVAILABLE, "no content type", 200, None), 1),
        ("/status/404", (UNAVAILABLE, "HTTP 404: no such file", 404, None), 1),
        ("/status/410", (UNAVAILABLE, "HTTP 410: no such file", 410, None), 1),
        ("/status/403", (UNAVAILABLE, "unexpected HTTP 403", 403, None), 1),
        ("/nohead/a.mp3", (V, "HTTP 206 audio/mpeg", 206, "audio/mpeg"), 2),
        ("/notimpl/a.mp3", (V, "HTTP 206 audio/mpeg", 206, "audio/mpeg"), 2),
        ("/status/500", (UNREACHABLE, "HTTP 500", 500, None), 3),
        ("/status/503", (UNREACHABLE, "HTTP 503", 503, None), 3),
        ("/status/429", (UNREACHABLE, "HTTP 429", 429, None), 3),
        ("/flaky/2/a.mp3", (V, "HTTP 200 audio/mpeg", 200, "audio/mpeg"), 3),
        ("/redirect/3", (V, "HTTP 200 audio/mpeg", 200, "audio/mpeg"), 1),
        ("/redirect/4", (UNAVAILABLE, "more than 3 redirects", 302, None), 1),
    ],
)
async def test_http_outcomes(
    path: str,
    expected: tuple[AudioState, str, int | None, str | None],
    hits: int,
    audio_server: AudioServer,
    make_checker: MakeChecker,
    dial_recorder: DialRecorder,
) -> None:
    url = audio_server.url(path)
    assert await make_checker().check(url) == AudioResult(url, *expected)
    assert audio_server.hits[path] == hits
    assert loopback_only(dial_recorder, audio_server.port)


async def test_redirect_chain_is_walked_hop_by_hop(audio_server: AudioServer, make_checker: MakeChecker) -> None:
    await make_checker().check(audio_server.url("/redirect/4"))
    assert [audio_server.hits[f"/redirect/{n}"] for n in (4, 3, 2, 1, 0)] == [1, 1, 1, 1, 0]


async def test_ranged_get_asks_for_one_byte(audio_server: AudioServer, make_checker: MakeChecker) -> None:
    # The server answers 206 only to exactly "bytes=0-0"-style ranges; a plain GET would be a 200.
    result = await make_checker().check(audio_server.url("/nohead/b.mp3"))
    assert (result.state, result.status) == (V, 206)


async def test_slow_server_times_out(audio_server: AudioServer, make_checker: MakeChecker) -> None:
    url = audio_server.url("/slow/30")
    checker = make_checker({**INSECURE, "RELAY_AUDIO_TIMEOUT_SECONDS": 0.2, "RELAY_AUDIO_RETRIES": 2})
    assert await checker.check(url) == AudioResult(url, UNREACHABLE, "timed out", None, None)
    assert audio_server.hits["/slow/30"] == 2


@pytest.mark.parametrize(("concurrency", "per_host"), [(64, 2), (3, 16)])
async def test_concurrency_is_bounded(
    concurrency: int, per_host: int, audio_server: AudioServer, make_checker: MakeChecker
) -> None:
    checker = make_checker({**INSECURE, "RELAY_AUDIO_CONCURRENCY": concurrency, "RELAY_AUDIO_PER_HOST": per_host})
    urls = [audio_server.url(f"/slow/0.05?n={n}") for n in range(8)]
    results = await asyncio.gather(*(checker.check(url) for url in urls))
    assert {result.state for result in results} == {V}
    assert audio_server.hits["/slow/0.05"] == 8
    assert 1 <= audio_server.peak <= min(concurrency, per_host)


async def test_closed_port_is_unreachable(make_checker: MakeChecker, dial_recorder: DialRecorder) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/a.mp3"
    result = await make_checker().check(url)
    assert (result.state, result.status, result.content_type) == (UNREACHABLE, None, None)
    assert result.reason.startswith("ConnectError: ")
    assert dial_recorder.dials == [("127.0.0.1", port)] * 3


async def test_name_resolving_to_loopback_is_checked(
    audio_server: AudioServer, make_checker: MakeChecker, dial_recorder: DialRecorder
) -> None:
    url = f"http://ok.example:{audio_server.port}/audio/a.mp3"
    assert await make_checker().check(url) == AudioResult(url, V, "HTTP 200 audio/mpeg", 200, "audio/mpeg")
    assert dial_recorder.dials == [("127.0.0.1", audio_server.port)]


async def test_keep_alive_reuses_one_connection(
    audio_server: AudioServer, make_checker: MakeChecker, dial_recorder: DialRecorder
) -> None:
    checker = make_checker()
    for name in ("a", "b", "c"):
        assert (await checker.check(audio_server.url(f"/audio/{name}.mp3"))).state is V
    assert len(dial_recorder.dials) == 1


REFUSED_BEFORE_DIALLING = [
    (SECURE, "http://cdn.example/a.mp3", "scheme 'http' is not allowed"),
    (SECURE, "https://127.0.0.1/a.mp3", "address 127.0.0.1 is loopback"),
    (SECURE, "https://[::1]/a.mp3", "address ::1 is loopback"),
    (SECURE, "https://ok.example/a.mp3", "ok.example: address 127.0.0.1 is loopback"),
    (INSECURE, "http://10.0.0.1/a.mp3", "address 10.0.0.1 is private"),
    (INSECURE, "http://169.254.169.254/latest/meta-data/", "address 169.254.169.254 is link-local"),
    (INSECURE, "http://[fd00::1]/a.mp3", "address fd00::1 is private"),
    (INSECURE, "http://[::ffff:10.0.0.1]/a.mp3", "address ::ffff:10.0.0.1 embeds 10.0.0.1, which is private"),
    (INSECURE, "http://private.example/a.mp3", "private.example: address 192.168.1.7 is private"),
    (INSECURE, "http://rebind.example/a.mp3", "rebind.example: address 10.0.0.5 is private"),
    (INSECURE, "http://v6.example/a.mp3", "v6.example: address fd00::1 is private"),
    (INSECURE, "http://mixed.example/a.mp3", "mixed.example: address 10.0.0.5 is private"),
    (INSECURE, "http://user:pass@ok.example/a.mp3", "URL carries credentials"),
    (INSECURE, "file:///etc/passwd", "scheme 'file' is not allowed"),
    (INSECURE, "ftp://ok.example/a.mp3", "scheme 'ftp' is not allowed"),
    (INSECURE, "data:audio/mpeg;base64,AAAA", "scheme 'data' is not allowed"),
    (INSECURE, "javascript:alert(1)", "scheme 'javascript' is not allowed"),
    (INSECURE, "::not a url::", "not a valid URL: Relative URLs cannot have a path starting with ':'"),
    (INSECURE, "http://[::1", "not a valid URL: Invalid port: ':1'"),
    (INSECURE, "http://ok.example/" + "a" * 2100, "URL is longer than 2048 characters"),
    (
        {**INSECURE, "RELAY_AUDIO_HOSTS": "cdn.example"},
        "http://ok.example/a",
        "host 'ok.example' is not in the allowlist",
    ),
]


@pytest.mark.parametrize(("settings", "url", "reason"), REFUSED_BEFORE_DIALLING)
async def test_refused_without_any_dial(
    settings: dict[str, object], url: str, reason: str, make_checker: MakeChecker, dial_recorder: DialRecorder
) -> None:
    assert await make_checker(settings).check(url) == AudioResult(url, REFUSED, reason, None, None)
    assert dial_recorder.dials == []


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://10.0.0.1/x", "redirect to http://10.0.0.1/x: address 10.0.0.1 is private"),
        ("http://169.254.169.254/", "redirect to http://169.254.169.254/: address 169.254.169.254 is link-local"),
        ("http://[fd00::1]/", "redirect to http://[fd00::1]/: address fd00::1 is private"),
        ("file:///etc/passwd", "redirect to file:/etc/passwd: scheme 'file' is not allowed"),
        ("http://u:p@ok.example/", "redirect to http://u:p@ok.example/: URL carries credentials"),
        ("http://[::1", "redirect to an invalid URL: Invalid port: ':1'"),
        ("http://rebind.example/a.mp3", "rebind.example: address 10.0.0.5 is private"),
    ],
)
async def test_redirect_targets_are_vetted(
    location: str, reason: str, audio_server: AudioServer, make_checker: MakeChecker, dial_recorder: DialRecorder
) -> None:
    url = audio_server.url(f"/to?url={location}")
    assert await make_checker().check(url) == AudioResult(url, REFUSED, reason, None, None)
    assert audio_server.hits["/to"] == 1  # refusals are never retried
    assert loopback_only(dial_recorder, audio_server.port)


@pytest.fixture
def public_cdn(tls_audio_server: tuple[AudioServer, SelfSignedCert], dial_recorder: DialRecorder) -> AudioServer:
    """https://cdn.example/ as the internet would serve it: a public IP, a trusted certificate."""
    server, certificate = tls_audio_server
    dial_recorder.routes[FAKE_PUBLIC_IP] = server.port
    dial_recorder.trust = certificate.trust
    return server


async def test_https_public_host_is_verified_with_its_sni(
    public_cdn: AudioServer, make_checker: MakeChecker, dial_recorder: DialRecorder
) -> None:
    url = "https://cdn.example/audio/a.mp3"
    assert await make_checker(SECURE).check(url) == AudioResult(url, V, "HTTP 200 audio/mpeg", 200, "audio/mpeg")
    assert dial_recorder.dials == [(FAKE_PUBLIC_IP, 443)]
    assert dial_recorder.sni == ["cdn.example"]


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("https://127.0.0.1/x", "redirect to https://127.0.0.1/x: address 127.0.0.1 is loopback"),
        ("https://[::1]/x", "redirect to https://[::1]/x: address ::1 is loopback"),
        ("https://ok.example/x", "ok.example: address 127.0.0.1 is loopback"),
        ("https://private.example/x", "private.example: address 192.168.1.7 is private"),
        ("http://cdn.example/x", "redirect to http://cdn.example/x: scheme 'http' is not allowed"),
    ],
)
async def test_secure_redirect_to_internal_is_refused(
    location: str, reason: str, public_cdn: AudioServer, make_checker: MakeChecker, dial_recorder: DialRecorder
) -> None:
    url = f"https://cdn.example/to?url={location}"
    assert await make_checker(SECURE).check(url) == AudioResult(url, REFUSED, reason, None, None)
    assert dial_recorder.dials == [(FAKE_PUBLIC_IP, 443)]


async def test_outcomes_are_counted_and_refusals_logged(
    make_checker: MakeChecker, caplog: pytest.LogCaptureFixture
) -> None:
    url = "gopher://ok.example/\nforged line"
    reason = "not a valid URL: Invalid non-printable ASCII character in URL, '\\n' at position 20."
    before = REGISTRY.get_sample_value("relay_audio_checks_total", {"outcome": "refused"}) or 0.0
    with caplog.at_level(logging.INFO, logger="indexer.net.audio_check"):
        assert await make_checker().check(url) == AudioResult(url, REFUSED, reason, None, None)
    assert REGISTRY.get_sample_value("relay_audio_checks_total", {"outcome": "refused"}) == before + 1
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [f"audio check refused url={url!r} reason={reason!r}"]
    assert "\n" not in messages[0]


async def test_checker_is_an_async_context_manager(audio_server: AudioServer, fake_resolver: FakeResolver) -> None:
    settings = make_settings(INSECURE)
    async with AudioChecker(settings.audio, settings.net, resolver=fake_resolver) as checker:
        result = await checker.check(audio_server.url("/audio/cm.mp3"))
    assert result.state is V


async def test_untrusted_certificate_is_unreachable(
    tls_audio_server: tuple[AudioServer, SelfSignedCert], make_checker: MakeChecker, dial_recorder: DialRecorder
) -> None:
    server, _ = tls_audio_server
    dial_recorder.routes[FAKE_PUBLIC_IP] = server.port  # no `trust`: the client's own CA bundle judges
    url = "https://cdn.example/audio/a.mp3"
    result = await make_checker(SECURE).check(url)
    assert (result.state, result.status, result.content_type) == (UNREACHABLE, None, None)
    assert "CERTIFICATE_VERIFY_FAILED" in result.reason
    assert dial_recorder.dials == [(FAKE_PUBLIC_IP, 443)] * 3
