"""The admin API in-process (`app.relay.admin.*`): off while RELAY_ADMIN_TOKEN is unset, a bearer token
otherwise, inputs and outputs checked against the lexicons. Against a running `serve` with its indexer:
tests/test_backfill_serve.py."""

from pathlib import Path

from tests.fixtures.api import start_api

TOKEN = "k" * 40
STATUS, REPLAY, BACKFILL = "app.relay.admin.getStatus", "app.relay.admin.replay", "app.relay.admin.backfill"


def test_the_admin_api_is_off_while_its_token_is_unset(tmp_path: Path) -> None:
    for api in start_api(tmp_path / "api.duckdb"):
        response = api.client.get(f"/xrpc/{STATUS}", headers={"authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 404
        assert response.json() == {
            "error": "NotFound", "message": "the admin API is off: set RELAY_ADMIN_TOKEN to turn it on"
        }


def test_a_missing_or_wrong_token_is_refused_and_the_right_one_answers(tmp_path: Path) -> None:
    for api in start_api(tmp_path / "api.duckdb", RELAY_ADMIN_TOKEN=TOKEN):
        missing = api.client.get(f"/xrpc/{STATUS}")
        assert (missing.status_code, missing.json()["error"]) == (401, "AuthRequired")
        wrong = api.client.post(f"/xrpc/{REPLAY}", json={"cursor": 1}, headers={"authorization": "Bearer nope"})
        assert wrong.json() == {"error": "AuthRequired", "message": "the admin token is wrong"}
        good = {"authorization": f"Bearer {TOKEN}"}
        status = api.client.get(f"/xrpc/{STATUS}", params={"rejections": 3}, headers=good)
        assert status.status_code == 200
        assert status.json()["progress"] == {
            "total": 0, "done": 0, "synced": 0, "failed": 0, "inactive": 0, "pending": 0, "syncing": 0, "records": 0
        }
        assert status.json()["status"]["backfill"]["syncs"] == {}
        # This process serves the API only: nothing here indexes.
        replay = api.client.post(f"/xrpc/{REPLAY}", json={"cursor": 1}, headers=good)
        assert (replay.status_code, replay.json()["error"]) == (409, "IndexerNotRunning")
        # The lexicon checks the input before anything runs.
        bad = api.client.post(f"/xrpc/{BACKFILL}", json={"dids": ["not a did"]}, headers=good)
        assert (bad.status_code, bad.json()["error"]) == (400, "InvalidRequest")
        unknown = api.client.post(f"/xrpc/{BACKFILL}", json={"everyone": True}, headers=good)
        assert unknown.status_code == 400
