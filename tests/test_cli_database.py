"""The commands' answers to a database setting that cannot work: one clean line on stderr, exit status 2."""

from __future__ import annotations

import pytest

from appview_api.cli import main
from tests.servers.postgres import free_port


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str]:
    monkeypatch.setenv("RELAY_DATABASE_URL", url)
    monkeypatch.setenv("RELAY_JETSTREAM_URLS", "ws://127.0.0.1:9/subscribe")  # never the public hosts
    status = main(list(args))
    return status, capsys.readouterr().err


@pytest.mark.parametrize("command", [["status"], ["serve", "--no-index"], ["index"]])
def test_a_database_that_is_not_there_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    port = free_port()
    status, err = run(monkeypatch, capsys, f"postgresql://relay:s3cret@127.0.0.1:{port}/relay", *command)
    assert status == 2
    assert err.startswith(f"relay-appview: the database at postgresql://relay:***@127.0.0.1:{port}/relay is unreachable: ")
    assert err.count("\n") == 1 and "s3cret" not in err


def test_a_malformed_database_url_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = run(monkeypatch, capsys, "mysql://relay:s3cret@db/relay", "serve")
    assert (status, err) == (2, "relay-appview: RELAY_DATABASE_URL: a postgresql:// URL is needed, not mysql://...\n")


def test_status_of_a_database_that_is_not_an_index(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], pg_url: str
) -> None:
    status, err = run(monkeypatch, capsys, pg_url, "status")
    assert (status, err) == (2, f"relay-appview: {pg_url} is not a relay index\n")
