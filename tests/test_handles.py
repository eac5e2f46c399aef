"""Handles that resolve back, or do not, through a loopback DNS server and loopback web hosts.

Production-shaped cases run with RELAY_ALLOW_INSECURE off: the handle's name resolves (in our DNS) to a fake
public address that the wire (`DialRecorder`) routes to a local HTTPS server whose certificate it trusts, so
the guard, TLS and SNI all run as they would against a real host, and nothing is dialled off the machine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from indexer.net.handles import MAX_BODY_BYTES, HandleResolution, HandleResolver
from indexer.net.resolver import DnsResolver
from tests.builders import make_settings
from tests.fixtures.audio import FAKE_PUBLIC_IP, DialRecorder, SelfSignedCert
from tests.fixtures.handles import TLS_HANDLE
from tests.fixtures.pds import LocalPds
from tests.servers.dns import DnsServer
from tests.servers.wellknown import WellKnownServer

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
OTHER = "did:plc:z72i7hdynmk6r22z27h6tvur"
WELL_KNOWN = f"https://{TLS_HANDLE}/.well-known/atproto-did"


@asynccontextmanager
async def resolver(
    dns: DnsServer, wire: DialRecorder, *, insecure: bool = False, timeout: float = 5.0
) -> AsyncIterator[HandleResolver]:
    net = make_settings(RELAY_DNS_NAMESERVERS=dns.nameserver, RELAY_ALLOW_INSECURE=insecure).net
    handles = HandleResolver(net, DnsResolver.from_settings(net, timeout=timeout), timeout_seconds=timeout, network_backend=wire)
    try:
        yield handles
    finally:
        await handles.aclose()


@pytest.fixture
def https_host(
    dns_server: DnsServer, dial_recorder: DialRecorder, tls_well_known_server: tuple[WellKnownServer, SelfSignedCert]
) -> WellKnownServer:
    """TLS_HANDLE's web host: its name answers a public address, which the wire routes to the local server."""
    server, certificate = tls_well_known_server
    dns_server.add(TLS_HANDLE, "A", FAKE_PUBLIC_IP)
    dial_recorder.routes[FAKE_PUBLIC_IP] = server.port
    dial_recorder.trust = certificate.trust
    return server


async def test_a_txt_record_that_points_back(dns_server: DnsServer, dial_recorder: DialRecorder) -> None:
    dns_server.add("_atproto.alice.example.com", "TXT", "v=spf1 -all", f"did={DID}")
    async with resolver(dns_server, dial_recorder) as handles:
        resolution = await handles.resolve("Alice.Example.COM")
    assert resolution == HandleResolution("alice.example.com", DID, "dns", None)
    assert resolution.confirms(DID) and not resolution.confirms(OTHER)
    assert dial_recorder.dials == []


async def test_a_txt_record_naming_another_did(dns_server: DnsServer, dial_recorder: DialRecorder) -> None:
    dns_server.add("_atproto.alice.example.com", "TXT", f"did={OTHER}")
    async with resolver(dns_server, dial_recorder) as handles:
        resolution = await handles.resolve("alice.example.com")
    assert resolution == HandleResolution("alice.example.com", OTHER, "dns", None)
    assert not resolution.confirms(DID)


@pytest.mark.parametrize(
    ("records", "reason"),
    [
        ([f"did={DID}", f"did={OTHER}"], "_atproto.alice.example.com has 2 did= TXT records"),
        ([f"did={DID}", "did=nonsense"], "_atproto.alice.example.com has 2 did= TXT records"),
        (["did=nonsense"], "_atproto.alice.example.com: 'nonsense' is not a DID"),
        ([f"did= {DID}"], f"_atproto.alice.example.com: ' {DID}' is not a DID"),
    ],
)
async def test_ambiguous_or_malformed_txt_records_are_refused_without_a_fallback(
    dns_server: DnsServer, dial_recorder: DialRecorder, https_host: WellKnownServer, records: list[str], reason: str
) -> None:
    https_host.serve(TLS_HANDLE, DID.encode())
    dns_server.add("_atproto.alice.example.com", "TXT", *records)
    async with resolver(dns_server, dial_recorder) as handles:
        resolution = await handles.resolve(TLS_HANDLE)
    assert resolution == HandleResolution(TLS_HANDLE, None, None, reason)
    assert dial_recorder.dials == []


async def test_no_txt_record_falls_back_to_the_well_known_over_https(
    dns_server: DnsServer, dial_recorder: DialRecorder, https_host: WellKnownServer
) -> None:
    https_host.serve(TLS_HANDLE, f"\n {DID}\r\n".encode())
    dns_server.add("_atproto.alice.example.com", "TXT", "v=spf1 -all")
    async with resolver(dns_server, dial_recorder) as handles:
        resolution = await handles.resolve(TLS_HANDLE)
    assert resolution == HandleResolution(TLS_HANDLE, DID, "https", None)
    assert dial_recorder.dials == [(FAKE_PUBLIC_IP, 443)]
    assert dial_recorder.sni == [TLS_HANDLE]
    assert ("_atproto.alice.example.com", "TXT") in dns_server.queries


@pytest.mark.parametrize(
    ("status", "body", "reason", "transient"),
    [
        (200, b"x" * (MAX_BODY_BYTES + 1), f"{WELL_KNOWN}: body is larger than {MAX_BODY_BYTES} bytes", False),
        (200, b"<html>did:plc:ewvi7nxzyoun6zhxrhs64oiz</html>", f"{WELL_KNOWN}: body is not a DID", False),
        (200, b"", f"{WELL_KNOWN}: body is not a DID", False),
        (200, "did:plc:ewvi7nxzyoun6zhxrhs64oiź".encode(), f"{WELL_KNOWN}: body is not a DID", False),
        (200, f"{DID}\n{OTHER}".encode(), f"{WELL_KNOWN}: body is not a DID", False),
        (404, DID.encode(), f"{WELL_KNOWN}: HTTP 404", False),
        (503, DID.encode(), f"{WELL_KNOWN}: HTTP 503", True),
        (429, DID.encode(), f"{WELL_KNOWN}: HTTP 429", True),
    ],
)
async def test_hostile_or_failing_well_known_answers(
    dns_server: DnsServer, dial_recorder: DialRecorder, https_host: WellKnownServer,
    status: int, body: bytes, reason: str, transient: bool,
) -> None:
    https_host.serve(TLS_HANDLE, body, status)
    async with resolver(dns_server, dial_recorder) as handles:
        resolution = await handles.resolve(TLS_HANDLE)
    assert resolution == HandleResolution(TLS_HANDLE, None, None, f"no did= TXT record; {reason}", transient)


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://10.0.0.1/.well-known/atproto-did", "redirect to http://10.0.0.1/.well-known/atproto-did: scheme 'http' is not allowed"),
        ("https://10.0.0.1/x", "redirect to https://10.0.0.1/x: address 10.0.0.1 is private"),
        ("https://user:pw@alice.example.com/x", "redirect to https://user:pw@alice.example.com/x: URL carries credentials"),
    ],
)
async def test_redirects_are_vetted(
    dns_server: DnsServer, dial_recorder: DialRecorder, https_host: WellKnownServer, location: str, reason: str
) -> None:
    https_host.redirect(TLS_HANDLE, location)
    async with resolver(dns_server, dial_recorder) as handles:
        resolution = await handles.resolve(TLS_HANDLE)
    assert resolution == HandleResolution(TLS_HANDLE, None, None, f"no did= TXT record; {WELL_KNOWN}: {reason}")
    assert dial_recorder.dials == [(FAKE_PUBLIC_IP, 443)]


async def test_a_redirect_loop_stops(
    dns_server: DnsServer, dial_recorder: DialRecorder, https_host: WellKnownServer
) -> None:
    https_host.redirect(TLS_HANDLE, "/.well-known/atproto-did")
    async with resolver(dns_server, dial_recorder) as handles:
        resolution = await handles.resolve(TLS_HANDLE)
    assert resolution.reason == f"no did= TXT record; {WELL_KNOWN}: more than 3 redirects"
    assert https_host.hits["/.well-known/atproto-did"] == 4


async def test_a_host_that_resolves_to_a_private_address_is_never_dialled(
    dns_server: DnsServer, dial_recorder: DialRecorder
) -> None:
    dns_server.add("evil.example.com", "A", "192.168.1.7")
    async with resolver(dns_server, dial_recorder) as handles:
        resolution = await handles.resolve("evil.example.com")
    reason = "https://evil.example.com/.well-known/atproto-did: evil.example.com: address 192.168.1.7 is private"
    assert resolution == HandleResolution("evil.example.com", None, None, f"no did= TXT record; {reason}")
    assert dial_recorder.dials == []


async def test_dns_failure_and_slow_hosts_are_transient(
    dns_server: DnsServer, dial_recorder: DialRecorder, https_host: WellKnownServer
) -> None:
    dns_server.servfail.add("_atproto.alice.example.com")
    https_host.serve(TLS_HANDLE, DID.encode())
    https_host.delays[TLS_HANDLE] = 5.0
    async with resolver(dns_server, dial_recorder, timeout=0.5) as handles:
        resolution = await handles.resolve(TLS_HANDLE)
    dns_reason = "DNS failed (DNS TXT lookup of _atproto.alice.example.com failed: NoNameservers)"
    assert resolution == HandleResolution(TLS_HANDLE, None, None, f"{dns_reason}; {WELL_KNOWN}: timed out", True)


async def test_dns_failure_still_tries_the_well_known(
    dns_server: DnsServer, dial_recorder: DialRecorder, https_host: WellKnownServer
) -> None:
    dns_server.servfail.add("_atproto.alice.example.com")
    https_host.serve(TLS_HANDLE, DID.encode())
    async with resolver(dns_server, dial_recorder) as handles:
        assert await handles.resolve(TLS_HANDLE) == HandleResolution(TLS_HANDLE, DID, "https", None)


async def test_insecure_mode_falls_back_to_http_on_loopback(
    dns_server: DnsServer, dial_recorder: DialRecorder, well_known_server: WellKnownServer
) -> None:
    dns_server.add("bob.test", "A", "127.0.0.1")
    dial_recorder.routes["127.0.0.1"] = well_known_server.port  # ports 443 and 80 both land on the plain server
    well_known_server.serve("bob.test", DID.encode())
    async with resolver(dns_server, dial_recorder, insecure=True) as handles:
        assert await handles.resolve("bob.test") == HandleResolution("bob.test", DID, "http", None)
    assert dial_recorder.dials == [("127.0.0.1", 443), ("127.0.0.1", 80)]
    async with resolver(dns_server, dial_recorder) as handles:
        refused = await handles.resolve("bob.test")
    assert refused == HandleResolution("bob.test", None, None, "handles under .test do not resolve")


@pytest.mark.parametrize(
    ("handle", "reason"),
    [
        ("", "'' is not a valid handle"),
        ("alice", "'alice' is not a valid handle"),
        ("alice..example.com", "'alice..example.com' is not a valid handle"),
        ("alice.example.com.", "'alice.example.com.' is not a valid handle"),
        ("al_ice.example.com", "'al_ice.example.com' is not a valid handle"),
        ("alice.example.com\n", "'alice.example.com\\n' is not a valid handle"),
        ("127.0.0.1", "'127.0.0.1' is not a valid handle"),
        ("x" * 300 + ".com", repr("x" * 100) + " is not a valid handle"),
        ("laptop.local", "handles under .local do not resolve"),
        ("blah.arpa", "handles under .arpa do not resolve"),
        ("handle.invalid", "handles under .invalid do not resolve"),
        ("alice.example", "handles under .example do not resolve"),
        ("2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion", "handles under .onion do not resolve"),
        ("alice.test", "handles under .test do not resolve"),
    ],
)
async def test_handles_that_never_resolve(
    dns_server: DnsServer, dial_recorder: DialRecorder, handle: str, reason: str
) -> None:
    async with resolver(dns_server, dial_recorder) as handles:
        resolution = await handles.resolve(handle)
    assert resolution == HandleResolution(handle.lower(), None, None, reason)
    assert dns_server.queries == [] and dial_recorder.dials == []


async def test_a_handle_too_long_for_dns_goes_straight_to_https(
    dns_server: DnsServer, dial_recorder: DialRecorder
) -> None:
    handle = ".".join(["a" * 61] * 4) + ".com"  # 248 characters: valid, but `_atproto.` + it is no DNS name
    async with resolver(dns_server, dial_recorder) as handles:
        resolution = await handles.resolve(handle)
    assert resolution == HandleResolution(
        handle, None, None, f"no did= TXT record; https://{handle}/.well-known/atproto-did: no such domain"
    )  # NXDOMAIN is an answer: not transient, not asked again soon
    assert [kind for _, kind in dns_server.queries] == ["A", "AAAA"]


@pytest.mark.slow
async def test_a_handle_on_the_reference_pds_resolves_back(
    local_pds: LocalPds, dns_server: DnsServer, dial_recorder: DialRecorder
) -> None:
    # The PDS answers /.well-known/atproto-did for the handles it hosts, by Host header; in development it
    # serves http on its own port, so our DNS sends the handle to loopback and the wire to that port.
    account = local_pds.create_account("handle")
    dns_server.add(account.handle, "A", "127.0.0.1")
    dns_server.add("nobody.test", "A", "127.0.0.1")
    dial_recorder.routes["127.0.0.1"] = int(local_pds.pds_url.rsplit(":", 1)[1])
    async with resolver(dns_server, dial_recorder, insecure=True) as handles:
        resolution = await handles.resolve(account.handle)
        unknown = await handles.resolve("nobody.test")
    assert resolution == HandleResolution(account.handle, account.did, "http", None)
    assert resolution.confirms(account.did)
    assert unknown.did is None
    assert unknown.reason == (
        "no did= TXT record; https://nobody.test/.well-known/atproto-did: ConnectError; "
        "http://nobody.test/.well-known/atproto-did: HTTP 404"
    )
