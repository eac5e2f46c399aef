"""The service's one DNS resolver, against a real DNS server on loopback named by RELAY_DNS_NAMESERVERS."""

from __future__ import annotations

import socket

import httpcore
import pytest

from indexer.errors import UnsafeURL
from indexer.net.netguard import GuardedBackend, NoSuchHost
from indexer.net.resolver import DnsResolver
from tests.builders import make_settings
from tests.fixtures.audio import FAKE_PUBLIC_IP, DialRecorder
from tests.servers.audio import AudioServer
from tests.servers.dns import DnsServer


def resolver_for(server: DnsServer, timeout: float = 2.0) -> DnsResolver:
    return DnsResolver.from_settings(make_settings(RELAY_DNS_NAMESERVERS=server.nameserver).net, timeout=timeout)


async def test_addresses_of_both_families(dns_server: DnsServer) -> None:
    dns_server.add("both.test", "A", "93.184.216.34", "93.184.216.35")
    dns_server.add("both.test", "AAAA", "2606:2800:220:1::1")
    dns_server.add("v4.test", "A", "93.184.216.34")
    dns_server.add("v6.test", "AAAA", "2606:2800:220:1::1")
    resolver = resolver_for(dns_server)
    assert sorted(await resolver.resolve("both.test")) == ["2606:2800:220:1::1", "93.184.216.34", "93.184.216.35"]
    assert await resolver.resolve("V4.test.") == ["93.184.216.34"]
    assert await resolver.resolve("v6.test") == ["2606:2800:220:1::1"]
    assert sorted(dns_server.queries) == sorted(
        [(name, kind) for name in ("both.test", "v4.test", "v6.test") for kind in ("A", "AAAA")]
    )


async def test_an_unknown_name_is_a_gaierror_and_a_name_without_addresses_is_empty(dns_server: DnsServer) -> None:
    dns_server.add("text-only.test", "TXT", "hello")
    resolver = resolver_for(dns_server)
    with pytest.raises(socket.gaierror) as caught:
        await resolver.resolve("nowhere.test")
    assert str(caught.value) == "[Errno -2] nowhere.test: no such domain"
    assert await resolver.resolve("text-only.test") == []


async def test_dns_failures_are_os_errors_and_timeouts(dns_server: DnsServer) -> None:
    dns_server.servfail.add("broken.test")
    dns_server.silent.add("slow.test")
    resolver = resolver_for(dns_server, timeout=0.3)
    with pytest.raises(OSError) as failed:
        await resolver.resolve("broken.test")
    assert str(failed.value) == "DNS A lookup of broken.test failed: NoNameservers"
    with pytest.raises(TimeoutError) as slow:
        await resolver.txt("slow.test")
    assert str(slow.value) == "DNS TXT lookup of slow.test timed out"


async def test_localhost_is_loopback_without_a_query(dns_server: DnsServer) -> None:
    assert await resolver_for(dns_server).resolve("localhost") == ["127.0.0.1", "::1"]
    assert await DnsResolver().resolve("pds.localhost.") == ["127.0.0.1", "::1"]  # the system's config, no query
    assert dns_server.queries == []


async def test_txt_records(dns_server: DnsServer) -> None:
    dns_server.add("_atproto.alice.test", "TXT", "did=did:plc:ewvi7nxzyoun6zhxrhs64oiz", ("v=spf1 ", "-all"))
    resolver = resolver_for(dns_server)
    assert sorted(await resolver.txt("_atproto.alice.test")) == ["did=did:plc:ewvi7nxzyoun6zhxrhs64oiz", "v=spf1 -all"]
    assert await resolver.txt("_atproto.nobody.test") == []


def guard(server: DnsServer, wire: DialRecorder, *, allow_loopback: bool) -> GuardedBackend:
    return GuardedBackend(allow_loopback=allow_loopback, resolver=resolver_for(server), inner=wire)


@pytest.mark.parametrize(
    ("records", "allow_loopback", "reason"),
    [
        ({"A": ["10.0.0.5"]}, True, "private.test: address 10.0.0.5 is private"),
        ({"A": [FAKE_PUBLIC_IP, "192.168.1.7"]}, True, "private.test: address 192.168.1.7 is private"),
        ({"A": [FAKE_PUBLIC_IP], "AAAA": ["fd00::1"]}, True, "private.test: address fd00::1 is private"),
        ({"A": ["169.254.169.254"]}, True, "private.test: address 169.254.169.254 is link-local"),
        ({"AAAA": ["::ffff:10.0.0.1"]}, True, "private.test: address ::ffff:10.0.0.1 embeds 10.0.0.1, which is private"),
        ({"A": ["127.0.0.1"]}, False, "private.test: address 127.0.0.1 is loopback"),
    ],
)
async def test_the_guard_refuses_private_answers_from_our_dns(
    dns_server: DnsServer, dial_recorder: DialRecorder, records: dict[str, list[str]], allow_loopback: bool, reason: str
) -> None:
    for kind, values in records.items():
        dns_server.add("private.test", kind, *values)
    with pytest.raises(UnsafeURL) as caught:
        await guard(dns_server, dial_recorder, allow_loopback=allow_loopback).connect_tcp("private.test", 443)
    assert caught.value.reason == reason
    assert dial_recorder.dials == []


async def test_the_guard_dials_what_our_dns_answered(
    dns_server: DnsServer, dial_recorder: DialRecorder, audio_server: AudioServer
) -> None:
    dns_server.add("cdn.test", "A", FAKE_PUBLIC_IP)
    dial_recorder.routes[FAKE_PUBLIC_IP] = audio_server.port
    stream = await guard(dns_server, dial_recorder, allow_loopback=False).connect_tcp("cdn.test", 443)
    await stream.aclose()
    assert dial_recorder.dials == [(FAKE_PUBLIC_IP, 443)]


async def test_the_guard_reports_unknown_and_slow_names(dns_server: DnsServer, dial_recorder: DialRecorder) -> None:
    dns_server.silent.add("slow.test")
    backend = guard(dns_server, dial_recorder, allow_loopback=True)
    with pytest.raises(NoSuchHost) as unknown:  # a ConnectError: callers that need not tell see one
        await backend.connect_tcp("nowhere.test", 443)
    assert str(unknown.value) == "cannot resolve nowhere.test: no such domain"
    dns_server.servfail.add("broken.test")
    with pytest.raises(httpcore.ConnectError) as failed:
        await backend.connect_tcp("broken.test", 443)
    assert not isinstance(failed.value, NoSuchHost)  # a DNS failure is no answer: it may pass
    assert str(failed.value).startswith("cannot resolve broken.test: ")
    with pytest.raises(httpcore.ConnectTimeout) as slow:
        await backend.connect_tcp("slow.test", 443, timeout=0.3)
    assert str(slow.value) == "resolving slow.test timed out"
    assert dial_recorder.dials == []
