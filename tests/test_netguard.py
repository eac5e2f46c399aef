"""The SSRF policy as tables, then the connect-time guard against a real loopback server."""

import httpcore
import pytest

from indexer.errors import UnsafeURL
from indexer.net.netguard import GuardedBackend, SystemResolver, check_address, check_url
from tests.fixtures.audio import DialRecorder, FakeResolver
from tests.servers.audio import AudioServer

ALLOWED_URLS = [
    ("https://cdn.example/a.mp3", False, "https://cdn.example/a.mp3"),
    ("HTTPS://CDN.Example/a.mp3", False, "https://cdn.example/a.mp3"),
    ("https://cdn.example:8443/a.mp3", False, "https://cdn.example:8443/a.mp3"),
    ("https://éxample.com/a.mp3", False, "https://xn--xample-9ua.com/a.mp3"),
    ("https://8.8.8.8/a.mp3", False, "https://8.8.8.8/a.mp3"),
    ("https://[2001:4860::8888]/a.mp3", False, "https://[2001:4860::8888]/a.mp3"),
    ("http://cdn.example/a.mp3", True, "http://cdn.example/a.mp3"),
    ("http://127.0.0.1:8000/a.mp3", True, "http://127.0.0.1:8000/a.mp3"),
    ("http://[::1]:8000/a.mp3", True, "http://[::1]:8000/a.mp3"),
    ("http://localhost:8000/a.mp3", True, "http://localhost:8000/a.mp3"),
]

REFUSED_URLS = [
    ("http://cdn.example/a.mp3", False, "scheme 'http' is not allowed"),
    ("file:///etc/passwd", True, "scheme 'file' is not allowed"),
    ("ftp://cdn.example/a.mp3", True, "scheme 'ftp' is not allowed"),
    ("data:audio/mpeg;base64,AAAA", True, "scheme 'data' is not allowed"),
    ("javascript:alert(1)", True, "scheme 'javascript' is not allowed"),
    ("gopher://cdn.example/", True, "scheme 'gopher' is not allowed"),
    ("", False, "scheme '' is not allowed"),
    ("not a url", False, "scheme '' is not allowed"),
    ("//cdn.example/a.mp3", False, "scheme '' is not allowed"),
    ("https://", False, "URL has no host"),
    ("https:/cdn.example/a.mp3", False, "URL has no host"),
    ("https://[::1", False, "not a valid URL: Invalid port: ':1'"),
    ("https://010.0.0.1/", False, "not a valid URL: Invalid IPv4 address: '010.0.0.1'"),
    ("https://a b.example/", False, "host 'a%20b.example' is not a valid hostname"),
    ("https://a..b/", False, "host 'a..b' is not a valid hostname"),
    ("https://user:pass@cdn.example/a.mp3", False, "URL carries credentials"),
    ("https://user@cdn.example/a.mp3", False, "URL carries credentials"),
    ("https://cdn.example/" + "a" * 2030, False, "URL is longer than 2048 characters"),
    ("https://cdn.example:99999/", False, "port 99999 is out of range"),
    ("https://cdn.example:0/", False, "port 0 is out of range"),
    ("https://0x7f.1/", True, "host '0x7f.1' looks like a non-canonical IP address"),
    ("https://2130706433/", True, "host '2130706433' looks like a non-canonical IP address"),
    ("https://127.1/", True, "host '127.1' looks like a non-canonical IP address"),
    ("https://127.0.0.1/a.mp3", False, "address 127.0.0.1 is loopback"),
    ("https://[::1]/a.mp3", False, "address ::1 is loopback"),
    ("https://10.0.0.1/", True, "address 10.0.0.1 is private"),
    ("https://172.16.0.1/", True, "address 172.16.0.1 is private"),
    ("https://192.168.1.7/", True, "address 192.168.1.7 is private"),
    ("http://169.254.169.254/latest/meta-data/", True, "address 169.254.169.254 is link-local"),
    ("https://100.64.0.1/", True, "address 100.64.0.1 is not globally routable"),
    ("https://0.0.0.0/", True, "address 0.0.0.0 is unspecified"),
    ("https://224.0.0.1/", True, "address 224.0.0.1 is multicast"),
    ("https://240.0.0.1/", True, "address 240.0.0.1 is reserved"),
    ("https://[::]/", True, "address :: is unspecified"),
    ("https://[fd00::1]/", True, "address fd00::1 is private"),
    ("https://[fe80::1]/", True, "address fe80::1 is link-local"),
    ("https://[ff02::1]/", True, "address ff02::1 is multicast"),
    ("https://[::ffff:10.0.0.1]/", True, "address ::ffff:10.0.0.1 embeds 10.0.0.1, which is private"),
    ("https://[::ffff:127.0.0.1]/", False, "address ::ffff:127.0.0.1 embeds 127.0.0.1, which is loopback"),
    ("https://[2002:a00:1::]/", True, "address 2002:a00:1:: embeds 10.0.0.1, which is private"),
]


@pytest.mark.parametrize(("url", "insecure", "parsed"), ALLOWED_URLS)
def test_check_url_allows(url: str, insecure: bool, parsed: str) -> None:
    assert str(check_url(url, allow_insecure=insecure)) == parsed


@pytest.mark.parametrize(("url", "insecure", "reason"), REFUSED_URLS)
def test_check_url_refuses(url: str, insecure: bool, reason: str) -> None:
    with pytest.raises(UnsafeURL) as caught:
        check_url(url, allow_insecure=insecure)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://cdn.example/a.mp3", None),
        ("https://CDN.example./a.mp3", None),
        ("https://evil.example/a.mp3", "host 'evil.example' is not in the allowlist"),
        ("https://cdn.example.evil.example/a.mp3", "host 'cdn.example.evil.example' is not in the allowlist"),
        ("https://8.8.8.8/a.mp3", "host '8.8.8.8' is not in the allowlist"),
    ],
)
def test_check_url_allowlist(url: str, reason: str | None) -> None:
    hosts = frozenset({"cdn.example"})
    if reason is None:
        assert check_url(url, allow_insecure=False, hosts=hosts).host.rstrip(".") == "cdn.example"
        return
    with pytest.raises(UnsafeURL) as caught:
        check_url(url, allow_insecure=False, hosts=hosts)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("ip", "allow_loopback", "reason"),
    [
        ("93.184.216.34", False, None),
        ("2606:2800:220:1::1", False, None),
        ("::ffff:93.184.216.34", False, None),
        ("64:ff9b::808:808", False, None),
        ("127.0.0.1", True, None),
        ("127.9.9.9", True, None),
        ("::1", True, None),
        ("127.0.0.1", False, "address 127.0.0.1 is loopback"),
        ("::1", False, "address ::1 is loopback"),
        ("10.1.2.3", True, "address 10.1.2.3 is private"),
        ("169.254.169.254", True, "address 169.254.169.254 is link-local"),
        ("100.127.255.254", True, "address 100.127.255.254 is not globally routable"),
        ("192.0.0.8", True, "address 192.0.0.8 is not globally routable"),
        ("198.18.0.1", True, "address 198.18.0.1 is private"),
        ("255.255.255.255", True, "address 255.255.255.255 is reserved"),
        ("fc00::1", True, "address fc00::1 is private"),
        ("fe80::1%eth0", True, "address fe80::1%eth0 is link-local"),
        ("::a00:1", True, "address ::a00:1 is reserved"),
        ("64:ff9b::a00:1", True, "address 64:ff9b::a00:1 embeds 10.0.0.1, which is private"),
        ("64:ff9b:1::1", True, "address 64:ff9b:1::1 is reserved"),
        ("2001::1", True, "address 2001::1 is private"),
        ("::ffff:169.254.169.254", True, "address ::ffff:169.254.169.254 embeds 169.254.169.254, which is link-local"),
        ("not-an-ip", True, "'not-an-ip' is not an IP address"),
    ],
)
def test_check_address(ip: str, allow_loopback: bool, reason: str | None) -> None:
    if reason is None:
        check_address(ip, allow_loopback=allow_loopback)
        return
    with pytest.raises(UnsafeURL) as caught:
        check_address(ip, allow_loopback=allow_loopback)
    assert caught.value.reason == reason


def guarded(fake_resolver: FakeResolver, dial_recorder: DialRecorder, *, allow_loopback: bool) -> GuardedBackend:
    return GuardedBackend(allow_loopback=allow_loopback, resolver=fake_resolver, inner=dial_recorder)


async def test_backend_dials_the_vetted_address(
    audio_server: AudioServer, fake_resolver: FakeResolver, dial_recorder: DialRecorder
) -> None:
    port = int(audio_server.base_url.rsplit(":", 1)[1])
    stream = await guarded(fake_resolver, dial_recorder, allow_loopback=True).connect_tcp("ok.example", port)
    await stream.write(b"HEAD /audio/a.mp3 HTTP/1.1\r\nHost: ok.example\r\nConnection: close\r\n\r\n")
    assert (await stream.read(12)).startswith(b"HTTP/1.1 200")
    await stream.aclose()
    assert dial_recorder.dials == [("127.0.0.1", port)]
    assert fake_resolver.lookups == ["ok.example"]


async def test_backend_skips_dns_for_ip_literals(
    audio_server: AudioServer, fake_resolver: FakeResolver, dial_recorder: DialRecorder
) -> None:
    port = int(audio_server.base_url.rsplit(":", 1)[1])
    stream = await guarded(fake_resolver, dial_recorder, allow_loopback=True).connect_tcp("127.0.0.1", port)
    await stream.aclose()
    assert fake_resolver.lookups == []
    assert dial_recorder.dials == [("127.0.0.1", port)]


@pytest.mark.parametrize(
    ("host", "allow_loopback", "reason"),
    [
        ("ok.example", False, "ok.example: address 127.0.0.1 is loopback"),
        ("private.example", True, "private.example: address 192.168.1.7 is private"),
        ("rebind.example", True, "rebind.example: address 10.0.0.5 is private"),
        ("v6.example", True, "v6.example: address fd00::1 is private"),
        ("metadata.example", True, "metadata.example: address 169.254.169.254 is link-local"),
        ("mixed.example", True, "mixed.example: address 10.0.0.5 is private"),
        ("mapped.example", True, "mapped.example: address ::ffff:10.0.0.1 embeds 10.0.0.1, which is private"),
        ("10.0.0.1", True, "address 10.0.0.1 is private"),
        ("::1", False, "address ::1 is loopback"),
    ],
)
async def test_backend_refuses_before_dialling(
    host: str, allow_loopback: bool, reason: str, fake_resolver: FakeResolver, dial_recorder: DialRecorder
) -> None:
    with pytest.raises(UnsafeURL) as caught:
        await guarded(fake_resolver, dial_recorder, allow_loopback=allow_loopback).connect_tcp(host, 443)
    assert caught.value.reason == reason
    assert dial_recorder.dials == []


async def test_backend_unknown_name_is_a_connect_error(
    fake_resolver: FakeResolver, dial_recorder: DialRecorder
) -> None:
    with pytest.raises(httpcore.ConnectError, match=r"^cannot resolve nowhere\.example: "):
        await guarded(fake_resolver, dial_recorder, allow_loopback=True).connect_tcp("nowhere.example", 443)
    assert dial_recorder.dials == []


async def test_backend_name_with_no_address_is_a_connect_error(dial_recorder: DialRecorder) -> None:
    backend = GuardedBackend(allow_loopback=True, resolver=FakeResolver({"empty.example": []}), inner=dial_recorder)
    with pytest.raises(httpcore.ConnectError, match=r"^empty\.example resolves to no address$"):
        await backend.connect_tcp("empty.example", 443)
    assert dial_recorder.dials == []


async def test_system_resolver_answers_are_vetted_too(dial_recorder: DialRecorder) -> None:
    # "localhost" comes from /etc/hosts: a real lookup that never leaves the machine.
    backend = GuardedBackend(allow_loopback=False, resolver=SystemResolver(), inner=dial_recorder)
    with pytest.raises(UnsafeURL) as caught:
        await backend.connect_tcp("localhost", 443)
    assert caught.value.reason in {"localhost: address 127.0.0.1 is loopback", "localhost: address ::1 is loopback"}
    assert dial_recorder.dials == []


async def test_backend_never_dials_unix_sockets(dial_recorder: DialRecorder) -> None:
    backend = GuardedBackend(allow_loopback=True, inner=dial_recorder)
    with pytest.raises(UnsafeURL) as caught:
        await backend.connect_unix_socket("/var/run/docker.sock")
    assert caught.value.reason == "unix sockets are never dialled"
