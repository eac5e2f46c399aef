"""`relay-appview publish` and `relay-appview storage migrate`, run as the real entry point against the
real local PDS, a real publishing service on 127.0.0.1 and the S3 server."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.fixtures.pds import LocalPds, PdsAccount
from tests.fixtures.publish import DATA, PublishService
from tests.fixtures.s3 import S3Server

pytestmark = pytest.mark.slow  # end to end: real processes and servers

CLI = str(Path(sys.executable).with_name("relay-appview"))
MP3 = DATA / "tone-3s.mp3"


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "R2_"))}
    base["RELAY_JETSTREAM_URLS"] = "ws://127.0.0.1:9/subscribe"
    base.update(RELAY_BACKFILL_URLS="", RELAY_BACKFILL="false")  # never the public relay
    return subprocess.run([CLI, *args], cwd=cwd, env=base | env, capture_output=True, text=True, timeout=120)


def publish_env(service: PublishService, account: PdsAccount, **changes: str) -> dict[str, str]:
    return {
        "RELAY_HANDLE": account.handle,
        "RELAY_APP_PASSWORD": account.password,
        "RELAY_PDS_URL": service.pds.pds_url,
        "RELAY_PUBLIC_URL": service.url,
        **changes,
    }


@pytest.fixture
def account(local_pds: LocalPds) -> PdsAccount:
    return local_pds.create_account("cli")


def test_publish_signs_in_and_prints_the_written_record(
    publish_service: PublishService, account: PdsAccount, tmp_path: Path
) -> None:
    result = run(
        "publish", str(MP3), "--title", "From the CLI", "--artist", "Shell", "--album", "Pipes",
        cwd=tmp_path, **publish_env(publish_service, account),
    )

    assert result.returncode == 0, result.stderr
    printed = orjson.loads(result.stdout)
    [stored] = publish_service.pds_records(account)
    assert (printed["uri"], printed["cid"], printed["record"]) == (stored["uri"], stored["cid"], stored["value"])
    assert (stored["value"]["title"], stored["value"]["album"]) == ("From the CLI", "Pipes")
    assert publish_service.objects() == [hashlib.sha256(MP3.read_bytes()).hexdigest() + ".mp3"]


def test_publish_dry_run_writes_nothing(publish_service: PublishService, account: PdsAccount, tmp_path: Path) -> None:
    result = run(
        "publish", str(MP3), "--title", "T", "--artist", "A", "--dry-run",
        cwd=tmp_path, **publish_env(publish_service, account),
    )

    assert result.returncode == 0, result.stderr
    assert set(orjson.loads(result.stdout)) == {"uri", "record"}
    assert publish_service.nothing_left(account)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((str(MP3),), {"RELAY_APP_PASSWORD": "wrong-password"}, "sign-in failed: AuthenticationRequired: Invalid identifier or password"),
        ((str(MP3),), {"RELAY_HANDLE": ""}, "publish needs RELAY_HANDLE and RELAY_APP_PASSWORD"),
        ((str(DATA / "README.md"),), {}, "publish failed: UnsupportedAudio: not an mp3, wav, ogg or flac file"),
        (("missing.mp3",), {}, "missing.mp3: no such file"),
        ((str(MP3),), {"RELAY_PDS_URL": "http://127.0.0.1:9"}, "http://127.0.0.1:9 is unreachable: ConnectError"),
        ((str(MP3),), {"RELAY_PUBLIC_URL": "http://127.0.0.1:9"}, "http://127.0.0.1:9 is unreachable: ConnectError"),
    ],
    ids=["bad-password", "no-handle", "not-audio", "no-file", "pds-down", "service-down"],
)
def test_publish_failures_are_one_clean_line(
    publish_service: PublishService,
    account: PdsAccount,
    tmp_path: Path,
    args: tuple[str, ...],
    env: dict[str, str],
    message: str,
) -> None:
    result = run("publish", *args, "--title", "T", "--artist", "A", cwd=tmp_path, **publish_env(publish_service, account, **env))

    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"relay-appview: {message}\n")
    assert publish_service.nothing_left(account)


def test_storage_migrate_copies_local_audio_to_r2_once(
    tmp_path: Path, s3_server: S3Server, r2_overrides: dict[str, str]
) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    key = hashlib.sha256(MP3.read_bytes()).hexdigest() + ".mp3"
    (audio / key).write_bytes(MP3.read_bytes())
    (audio / "notes.txt").write_text("not audio")
    env = {
        "RELAY_AUDIO_DIR": str(audio),
        "R2_ENDPOINT_URL": r2_overrides["R2_ENDPOINT_URL"],
        "R2_ACCESS_KEY_ID": r2_overrides["R2_ACCESS_KEY_ID"],
        "R2_SECRET_ACCESS_KEY": r2_overrides["R2_SECRET_ACCESS_KEY"],
        "R2_BUCKET_NAME": r2_overrides["R2_BUCKET_NAME"],
        "R2_PUBLIC_URL": r2_overrides["R2_PUBLIC_URL"],
    }

    first = run("storage", "migrate", "--to", "r2", cwd=tmp_path, **env)
    again = run("storage", "migrate", "--to", "r2", cwd=tmp_path, **env)

    size = MP3.stat().st_size
    assert (first.returncode, first.stdout) == (0, f"copied 1 ({size} bytes), already there 0, not audio 1\n"), first.stderr
    assert (again.returncode, again.stdout) == (0, "copied 0 (0 bytes), already there 1, not audio 1\n")
    listed = s3_server.client().list_objects_v2(Bucket=r2_overrides["R2_BUCKET_NAME"])["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [(key, size)]


def test_storage_migrate_without_r2_settings_is_a_clean_error(tmp_path: Path) -> None:
    result = run("storage", "migrate", "--to", "r2", cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr == (
        "relay-appview: storage r2 needs R2_ACCOUNT_ID or R2_ENDPOINT_URL, R2_ACCESS_KEY_ID, "
        "R2_SECRET_ACCESS_KEY, R2_PUBLIC_URL\n"
    )
