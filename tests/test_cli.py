"""The operator's commands, run as the real `relay-appview` entry point."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from appview_api.cli import _parser
from indexer.atproto import tid
from indexer.db.rows import AudioResult, AudioState
from tests.builders import NO_BACKFILL, Applier, open_store
from tests.servers.events import commit, track_record

pytestmark = pytest.mark.slow  # end to end: real processes and servers

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("relay-appview"))
DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"


def run_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "R2_"))}
    env["RELAY_JETSTREAM_URLS"] = "ws://127.0.0.1:9/subscribe"  # never the public hosts
    return env | NO_BACKFILL


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], cwd=cwd, env=run_env(), capture_output=True, text=True, timeout=60)


def commands() -> list[str]:
    subparsers = next(a for a in _parser()._actions if a.dest == "command")
    return sorted(subparsers.choices)


def test_every_command_is_documented_with_an_example() -> None:
    readme = (ROOT / "README.md").read_text()
    subparsers = next(a for a in _parser()._actions if a.dest == "command")
    for name, sub in subparsers.choices.items():
        assert re.search(rf"relay-appview {name}\b", readme), f"README does not show `relay-appview {name}`"
        assert sub.epilog and sub.epilog.startswith("example: relay-appview"), name


def test_status_reports_cursor_states_and_rejections(tmp_path: Path) -> None:
    store = open_store(tmp_path / "relay.duckdb")
    good = track_record("Song", "Artist", "https://audio.example/a.mp3", created_at="2026-01-01T00:00:00Z")
    bad = {**good, "fileType": "aac"}
    events = [
        commit(DID, "3mmoojp7etg2g", "3mmoojp7vgo2a", "create", good, time_us=1779719009000000),
        commit(DID, "3mmoojp7etg2h", "3mmoojp7vgo2b", "create", bad, time_us=1779719009000001),
    ]
    Applier(store).apply(*events, source="ws://127.0.0.1:9/subscribe")
    store.close()

    text = run("status", "--db", "relay.duckdb", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "cursor:   1779719009000001 (2026-05-25T14:23:29.000Z" in text.stdout
    assert "tracks:   pending 1" in text.stdout
    assert f"at://{DID}/app.relay.track/3mmoojp7etg2h" in text.stdout and "fileType" in text.stdout

    report = orjson.loads(run("status", "--json", "--db", "relay.duckdb", cwd=tmp_path).stdout)
    assert report["tracks"] == {"pending": 1}
    assert report["rejections_total"] == 1
    assert report["cursor"]["source"] == "ws://127.0.0.1:9/subscribe"


def test_status_of_an_empty_database(tmp_path: Path) -> None:
    open_store(tmp_path / "fresh.duckdb").close()
    result = run("status", "--db", "fresh.duckdb", cwd=tmp_path)
    assert result.returncode == 0
    assert "cursor:   none (nothing indexed yet)" in result.stdout


def test_status_refuses_a_path_with_no_database_and_creates_nothing(tmp_path: Path) -> None:
    result = run("status", "--db", "typo/relay.duckdb", cwd=tmp_path)
    assert (result.returncode, result.stderr.strip()) == (2, "relay-appview: no database at typo/relay.duckdb")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="mounting needs root and unshare")
def test_status_reads_a_database_on_a_read_only_filesystem(tmp_path: Path) -> None:
    store = open_store(tmp_path / "relay.duckdb")
    Applier(store).apply(commit(DID, "3mmoojp7etg2g", "3mmoojp7vgo2a", "create", track_record("S", "A", "https://a.example/a.mp3")))
    store.close()
    ro = tmp_path / "ro"
    ro.mkdir()
    script = f"mount -t tmpfs tmpfs {ro} && cp {tmp_path}/relay.duckdb {ro}/ && mount -o remount,ro {ro} && exec {CLI} status --json --db {ro}/relay.duckdb"
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60, env=run_env())
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["tracks"] == {"pending": 1}


def test_serve_on_a_corrupt_database_is_one_clean_line(tmp_path: Path) -> None:
    store = open_store(tmp_path / "relay.duckdb")
    records = [commit(DID, key, key, "create", track_record(f"Song {i}", "A", f"https://a.example/{i}.mp3"))
               for i, key in enumerate(tid.encode(1_779_000_000_000_000 + i, 1) for i in range(20_000))]
    Applier(store).apply(*records)
    store.record_audio([AudioResult(r["commit"]["record"]["audioUrl"], AudioState.VERIFIED, "ok", 200, "audio/mpeg") for r in records])
    store.reader().execute("CHECKPOINT")
    store.close()
    data = bytearray((tmp_path / "relay.duckdb").read_bytes())
    for offset in range(len(data) // 3, len(data) - 4096, 4096):  # flip a byte in every block of the data
        data[offset + 100] ^= 0xFF
    (tmp_path / "relay.duckdb").write_bytes(bytes(data))

    result = run("serve", "--no-index", "--port", "9", "--db", "relay.duckdb", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("relay-appview: database error: Corrupt database file: ")
    assert len(result.stderr.strip().splitlines()) == 1 + result.stderr.count(" INFO ")  # log lines aside, one line


@pytest.mark.parametrize("value", ["-2h", "-30m", "-90s"])
def test_a_relative_cursor_may_follow_its_option_after_a_space(tmp_path: Path, value: str) -> None:
    process = subprocess.Popen(
        [CLI, "replay", "--cursor", value, "--db", "relay.duckdb"], cwd=tmp_path, env=run_env(),
        stderr=subprocess.PIPE, text=True,
    )
    lines = []
    for line in process.stderr:  # type: ignore[union-attr]
        lines.append(line)
        if "feed process started" in line:  # running, its signal handlers in place
            break
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    [replaying] = [line for line in lines if "replaying from cursor=" in line]
    logged = int(replaying.split("cursor=")[1].split()[0])
    seconds = {"-2h": 7200, "-30m": 1800, "-90s": 90}[value]
    assert abs(time.time() - logged / 1e6 - seconds) < 30
    assert process.returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "--cursor", "yesterday"], "relay-appview: 'yesterday' is not microseconds, an ISO 8601 time or a relative time like -2h"),
        (["replay", "--cursor", "2026-01-01T00:00:00"], "relay-appview: '2026-01-01T00:00:00' has no timezone; add Z or an offset"),
        (["index", "--jetstream", "https://not-a-websocket/subscribe"], "relay-appview: RELAY_JETSTREAM_URLS: 'https://not-a-websocket/subscribe' is not a ws:// or wss:// URL"),
    ],
)
def test_bad_arguments_give_one_clean_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = run(*args, "--db", "x.duckdb", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert not (tmp_path / "x.duckdb").exists()  # nothing was opened for a command that could not start


def test_bad_environment_is_named(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "R2_"))} | {"RELAY_PORT": "eighty"} | NO_BACKFILL
    result = subprocess.run([CLI, "status"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "relay-appview: RELAY_PORT='eighty': invalid literal for int() with base 10: 'eighty'"


def test_a_database_held_by_a_running_process_is_a_clean_error(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); sys.stdin.read()", str(tmp_path / "held.duckdb")],
        stdin=subprocess.PIPE,
    )
    try:
        import time

        deadline = time.monotonic() + 20
        while not (tmp_path / "held.duckdb").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        result = run("status", "--db", "held.duckdb", cwd=tmp_path)
    finally:
        holder.communicate(b"", timeout=20)
    assert result.returncode == 2
    assert result.stderr.startswith("relay-appview: cannot open the database held.duckdb: ")
    assert "lock" in result.stderr.lower()


def test_no_command_prints_help(tmp_path: Path) -> None:
    result = run(cwd=tmp_path)
    assert result.returncode == 2
    assert all(name in result.stdout for name in commands())
