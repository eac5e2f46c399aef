"""DID syntax is checked before anything is fetched: a DID from the wire is a stranger's string."""

import httpx
import pytest

from indexer.errors import IdentityError
from indexer.net.identity import IdentityResolver


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
