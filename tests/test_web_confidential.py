"""A deployment signs in as a confidential client: the reference PDS's authorization server fetches this
service's client metadata and JWKS over https, and accepts PAR and token requests only with a
`private_key_jwt` assertion signed by the key the JWKS publishes.

The service's documents are served over TLS on loopback under a name the test PDS alone resolves there
(`RELAY_PDS_HOSTS` in tests/pds/start.mjs) and a certificate from a throwaway CA the PDS is told to trust
(NODE_EXTRA_CA_CERTS): authorization servers accept neither IP literals nor reserved names in client IDs.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from appview_api.oauth.service import OAuth
from indexer.db.duckdb_store import DuckDBStore
from indexer.ingest.index import Index
from indexer.net.outbound import Outbound
from tests.builders import make_settings
from tests.fixtures.api import ThreadedServer
from tests.fixtures.pds import LocalPds, running_pds
from tests.fixtures.web import SESSION_SECRET, query
from tests.oauth_user import PdsUser
from tests.tls import make_certificates

pytestmark = pytest.mark.slow  # end to end: a PDS of its own, TLS

HOST = "relay-appview.internal"  # a reserved private-use TLD: never a public name


@dataclass
class Deployment:
    base_url: str
    oauth: OAuth
    index: Index
    store: DuckDBStore
    pds: LocalPds


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    certificates = make_certificates(tmp_path, HOST)
    env = {"NODE_EXTRA_CA_CERTS": str(certificates.ca), "RELAY_PDS_HOSTS": f"{HOST}=127.0.0.1"}
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base_url = f"https://{HOST}:{sock.getsockname()[1]}"
    with running_pds(env) as pds:
        settings = make_settings(
            RELAY_PUBLIC_URL=base_url,
            RELAY_SESSION_SECRET=SESSION_SECRET,
            RELAY_PLC_URL=pds.plc_url,
            RELAY_ALLOW_INSECURE=True,
            RELAY_HANDLE_RESOLVER_URL=pds.pds_url,
        )
        store = DuckDBStore(tmp_path / "relay.duckdb")
        index = Index(store, max_future_us=0)
        outbound = Outbound(settings)
        oauth = OAuth(settings, index, outbound)
        app = Starlette(routes=oauth.routes())
        tls = {"ssl_certfile": str(certificates.cert), "ssl_keyfile": str(certificates.key)}
        try:
            with ThreadedServer(app, sock, **tls):
                yield Deployment(base_url, oauth, index, store, pds)
        finally:
            await oauth.aclose()
            await outbound.aclose()
            index.close()
            store.close()


async def test_a_deployment_signs_in_with_private_key_jwt(deployment: Deployment) -> None:
    oauth, pds = deployment.oauth, deployment.pds
    assert oauth.client is not None and oauth.client.confidential
    account = pds.create_account("conf")

    started = await oauth.sign_in.begin(account.handle, "/")

    params = query(started.authorize_url)
    assert params["client_id"] == f"{deployment.base_url}/oauth-client-metadata.json"
    back = PdsUser(pds.pds_public_url, account.handle, account.password).authorize(started.authorize_url)
    session_id, _ = await oauth.sign_in.complete(query(back), started.browser_secret)
    sessions = oauth.sessions
    assert sessions is not None
    session = await sessions.get(session_id)
    assert session is not None and session.did == account.did
    refreshed = await sessions.fresh(session_id, rejected=session.access_token)  # authenticated again
    assert refreshed.refresh_token != session.refresh_token


async def test_the_client_key_is_generated_once_kept_sealed_and_published(deployment: Deployment) -> None:
    client = deployment.oauth.client
    assert client is not None and client.key is not None
    stored = deployment.store.meta("oauth_client_key")
    assert stored is not None and '"d"' not in stored and client.key.as_dict(private=True)["d"] not in stored
    settings = make_settings(RELAY_PUBLIC_URL=deployment.base_url, RELAY_SESSION_SECRET=SESSION_SECRET)
    outbound = Outbound(settings)
    again = OAuth(settings, deployment.index, outbound)  # a restart: the same key, read back from the database
    try:
        assert again.client is not None and again.client.key is not None
        assert again.client.key.thumbprint() == client.key.thumbprint()
    finally:
        await again.aclose()
        await outbound.aclose()
    async with httpx.AsyncClient(verify=False) as http:  # our own throwaway certificate
        url = f"https://127.0.0.1:{httpx.URL(deployment.base_url).port}"
        jwks = (await http.get(f"{url}/oauth/jwks.json")).json()
        metadata = (await http.get(f"{url}/oauth-client-metadata.json")).json()
    assert jwks == client.jwks() and metadata == client.metadata()
    assert "d" not in jwks["keys"][0]
