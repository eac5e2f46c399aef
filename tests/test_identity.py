"""DID documents: syntax checked before anything is fetched (a DID from the wire is a stranger's string),
answers cached, lookups of one DID shared, hostile hosts and documents refused as definitive failures."""

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import orjson
import pytest

from indexer.errors import IdentityError
from indexer.net.identity import IdentityResolver
from indexer.net.netguard import GuardedBackend, GuardedTransport
from tests.fixtures.audio import DialRecorder, FakeResolver


class NoDialTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        raise AssertionError(f"dialled {request.url}")


@pytest.mark.parametrize(
    "did",
    [
        "did:plc:ewvi7nxzyoun6zhxrhs64oiz\n",
        "did:plc:ewvi7nxzyoun6zhxrhs64oiz/../admin",
        "did:plc:EWVI7NXZYOUN6ZHXRHS64OIZ",
        "did:web:example.com\n",
        "did:web:example.com/path",
        "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK",
        "",
    ],
)
async def test_malformed_dids_are_refused_without_a_request(did: str) -> None:
    transport = NoDialTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        resolver = IdentityResolver("http://127.0.0.1:9", client, client)
        with pytest.raises(IdentityError) as caught:
            await resolver.resolve(did)
    assert caught.value.reason == f"{did}: not a did:plc or did:web identifier"
    assert transport.requests == []


# --- a real PLC stand-in on loopback: documents from a table, each fetch counted ---------------------------

ALICE = "did:plc:" + "a" * 24
GONE = "did:plc:" + "g" * 24
BROKEN = "did:plc:" + "b" * 24
HUGE = "did:plc:" + "h" * 24


def document(did: str) -> dict[str, object]:
    return {
        "id": did,
        "alsoKnownAs": ["at://Alice.Example.Com"],
        "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "https://pds.example"}],
    }


class Plc:
    def __init__(self, delay: float = 0.0) -> None:
        self.hits: list[str] = []
        plc = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                did = self.path.lstrip("/")
                plc.hits.append(did)
                time.sleep(delay)
                status, body = {
                    ALICE: (200, orjson.dumps(document(ALICE))),
                    BROKEN: (503, b"down"),
                    HUGE: (200, orjson.dumps({**document(HUGE), "pad": "x" * 70_000})),
                }.get(did, (404, b"not found"))
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
async def resolver() -> AsyncIterator[tuple[IdentityResolver, Plc]]:
    plc = Plc(delay=0.05)
    async with httpx.AsyncClient() as client:
        yield IdentityResolver(plc.url, client, client, cache_seconds=60, negative_seconds=0.2), plc
    plc.close()


async def test_a_document_is_fetched_once_then_served_from_the_cache(resolver: tuple[IdentityResolver, Plc]) -> None:
    identities, plc = resolver
    first = await identities.resolve(ALICE)
    again = await identities.resolve(ALICE)
    assert (first, first.handle, first.pds) == (again, "alice.example.com", "https://pds.example")
    assert first.document["id"] == ALICE
    assert (plc.hits, identities.fetches, identities.cached(ALICE)) == ([ALICE], 1, True)
    await identities.resolve(ALICE, fresh=True)  # a failed signature asks again: the key may have rotated
    assert plc.hits == [ALICE, ALICE]


async def test_concurrent_lookups_of_one_did_share_one_fetch(resolver: tuple[IdentityResolver, Plc]) -> None:
    identities, plc = resolver
    found = await asyncio.gather(*(identities.resolve(ALICE) for _ in range(20)))
    assert len({id(identity) for identity in found}) == 1
    assert plc.hits == [ALICE]


async def test_a_definitive_failure_is_cached_briefly_and_a_transient_one_not(resolver: tuple[IdentityResolver, Plc]) -> None:
    identities, plc = resolver
    for _ in range(3):
        with pytest.raises(IdentityError) as gone:
            await identities.resolve(GONE)
    assert (gone.value.reason, gone.value.transient) == (f"{GONE}: DID document fetch answered 404", False)
    for _ in range(2):
        with pytest.raises(IdentityError) as broken:
            await identities.resolve(BROKEN)
    assert broken.value.transient is True
    assert plc.hits == [GONE, BROKEN, BROKEN]
    await asyncio.sleep(0.25)  # past the negative TTL
    with pytest.raises(IdentityError):
        await identities.resolve(GONE)
    assert plc.hits.count(GONE) == 2


async def test_a_document_over_the_size_cap_is_refused(resolver: tuple[IdentityResolver, Plc]) -> None:
    identities, _ = resolver
    with pytest.raises(IdentityError) as caught:
        await identities.resolve(HUGE)
    assert caught.value.reason == f"{HUGE}: DID document is over 65536 bytes"


@pytest.mark.parametrize(("did", "kind"), [("did:web:metadata.example", "link-local"), ("did:web:10.0.0.1", "private")])
async def test_a_did_web_on_a_private_address_is_a_definitive_failure_and_nothing_is_dialled(
    did: str, kind: str, fake_resolver: FakeResolver, dial_recorder: DialRecorder
) -> None:
    backend = GuardedBackend(allow_loopback=False, resolver=fake_resolver, inner=dial_recorder)
    async with httpx.AsyncClient(transport=GuardedTransport(backend, max_connections=2)) as web:
        identities = IdentityResolver("http://127.0.0.1:9", web, web)
        with pytest.raises(IdentityError) as caught:
            await identities.resolve(did)
        assert caught.value.transient is False
        assert caught.value.reason.startswith(f"{did}: the DID document's host is refused: ")
        assert f"is {kind}" in caught.value.reason
        # The handle queue records the failure (no handle) instead of crashing and asking at every start.
        assert await identities.lookup_handle(did) == (did, None)
    assert dial_recorder.dials == []
