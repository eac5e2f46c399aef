"""Publishing through the real app (uvicorn on 127.0.0.1) to the real local PDS, with local and S3 storage.

Each test reads back all three places a write lands: the record on the PDS, the object in storage and the
track in the local index.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx
import pytest

from indexer.atproto import lexicons, tid
from tests.builders import wire
from tests.fixtures.pds import LocalPds
from tests.fixtures.publish import DATA, PublishService, start_service, write_wav
from tests.fixtures.publish import PUBLISH as PUBLISH_PATH
from tests.servers import events

pytestmark = pytest.mark.slow  # end to end: real processes and servers

MP3 = DATA / "tone-3s.mp3"
MiB = 1024 * 1024
UPDATE = "app.relay.track.update"
DELETE = "app.relay.track.delete"


def test_publish_writes_the_record_stores_the_audio_and_indexes_the_track(
    publish_service: PublishService, local_pds: LocalPds
) -> None:
    account = local_pds.create_account("pub")
    response = publish_service.publish(account, MP3, title="Loopback Blues", artist="The Fixtures", album="Tests")

    assert response.status_code == 200, response.text
    body = response.json()
    lexicons.validator().validate("app.relay.track.publish", "output", body)
    key = hashlib.sha256(MP3.read_bytes()).hexdigest() + ".mp3"
    rkey = body["uri"].rsplit("/", 1)[1]
    assert body["uri"] == f"at://{account.did}/app.relay.track/{rkey}"
    assert body["record"] == {
        "$type": "app.relay.track",
        "title": "Loopback Blues",
        "artist": "The Fixtures",
        "album": "Tests",
        "audioUrl": f"{publish_service.url}/audio/{key}",
        "fileType": "mp3",
        "duration": 3,
        "createdAt": body["record"]["createdAt"],
    }
    [stored] = publish_service.pds_records(account)
    assert (stored["uri"], stored["cid"], stored["value"]) == (body["uri"], body["cid"], body["record"])
    assert publish_service.objects() == [key]
    [row] = publish_service.rows()
    assert (row["did"], row["rkey"], row["cid"], row["title"], row["audio_state"]) == (
        account.did, rkey, body["cid"], "Loopback Blues", "verified"
    )
    audio = publish_service.client.get(f"/audio/{key}")
    assert (audio.status_code, audio.headers["content-type"], audio.content) == (200, "audio/mpeg", MP3.read_bytes())
    track = publish_service.client.get("/xrpc/app.relay.track.getTrack", params={"uri": body["uri"]})
    assert track.status_code == 200
    assert track.json()["track"]["title"] == "Loopback Blues"


@pytest.mark.parametrize(
    ("name", "file_type", "duration"),
    [("tone-3s.ogg", "ogg", 3), ("tone-3s.flac", "flac", 3), ("noise.wav", "wav", 2)],
)
def test_the_format_comes_from_the_bytes_not_the_name(
    publish_service: PublishService, local_pds: LocalPds, tmp_path: Path, name: str, file_type: str, duration: int
) -> None:
    path = DATA / name if name != "noise.wav" else write_wav(tmp_path / name, 16_044)
    account = local_pds.create_account("fmt")

    response = publish_service.publish(account, path, filename="misleading.mp3")

    assert response.status_code == 200, response.text
    record = response.json()["record"]
    assert (record["fileType"], record["duration"]) == (file_type, duration)
    assert record["audioUrl"].endswith(f".{file_type}")
    assert publish_service.objects() == [record["audioUrl"].rsplit("/", 1)[1]]


def test_dry_run_answers_the_record_and_writes_nothing(publish_service: PublishService, local_pds: LocalPds) -> None:
    account = local_pds.create_account("dry")

    response = publish_service.publish(account, MP3, params={"dryRun": "true"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"uri", "record"}
    assert body["record"]["fileType"] == "mp3"
    assert body["uri"].startswith(f"at://{account.did}/app.relay.track/")
    assert publish_service.nothing_left(account)


def test_dry_run_with_an_rkey_answers_exactly_what_the_real_publish_writes(
    publish_service: PublishService, local_pds: LocalPds
) -> None:
    account = local_pds.create_account("dry2")
    rkey = tid.TidClock().next()

    dry = publish_service.publish(account, MP3, params={"dryRun": "true", "rkey": rkey}).json()
    real = publish_service.publish(account, MP3, params={"rkey": rkey}).json()

    assert (dry["uri"], dry["record"]) == (real["uri"], real["record"])


def test_the_same_file_twice_is_stored_once_and_survives_until_its_last_track_goes(
    publish_service: PublishService, local_pds: LocalPds
) -> None:
    alice, bob = local_pds.create_account("alice"), local_pds.create_account("bob")
    first = publish_service.publish(alice, MP3, title="One").json()
    second = publish_service.publish(bob, MP3, title="Two").json()
    key = first["record"]["audioUrl"].rsplit("/", 1)[1]
    assert second["record"]["audioUrl"] == first["record"]["audioUrl"]
    assert publish_service.objects() == [key]

    gone = publish_service.call(DELETE, alice, {"uri": first["uri"]})

    assert (gone.status_code, gone.json()) == (200, {"uri": first["uri"], "audioDeleted": False})
    assert publish_service.objects() == [key]
    assert publish_service.pds_records(alice) == []
    assert [r["uri"] for r in publish_service.pds_records(bob)] == [second["uri"]]

    last = publish_service.call(DELETE, bob, {"uri": second["uri"]})

    assert (last.status_code, last.json()) == (200, {"uri": second["uri"], "audioDeleted": True})
    assert publish_service.objects() == []
    assert publish_service.pds_records(bob) == []
    assert [(r["deleted"], r["audio_url"]) for r in publish_service.rows()] == [(True, None), (True, None)]


def test_a_retry_with_the_same_rkey_lands_on_the_same_record(
    publish_service: PublishService, local_pds: LocalPds
) -> None:
    account = local_pds.create_account("retry")
    rkey = tid.TidClock().next()

    first = publish_service.publish(account, MP3, params={"rkey": rkey})
    again = publish_service.publish(account, MP3, params={"rkey": rkey})

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert [r["uri"] for r in publish_service.pds_records(account)] == [first.json()["uri"]]
    assert len(publish_service.objects()) == 1
    assert [r["rkey"] for r in publish_service.rows()] == [rkey]


def test_an_rkey_naming_another_record_is_refused_and_its_new_object_removed(
    publish_service: PublishService, local_pds: LocalPds, tmp_path: Path
) -> None:
    account = local_pds.create_account("clash")
    rkey = tid.TidClock().next()
    original = publish_service.publish(account, MP3, params={"rkey": rkey}).json()

    clash = publish_service.publish(account, write_wav(tmp_path / "other.wav", 8044), params={"rkey": rkey})

    assert clash.status_code == 409
    assert clash.json() == {"error": "RecordExists", "message": f"rkey {rkey} already names a different record"}
    [stored] = publish_service.pds_records(account)
    assert (stored["cid"], stored["value"]) == (original["cid"], original["record"])
    assert publish_service.objects() == [original["record"]["audioUrl"].rsplit("/", 1)[1]]


def test_update_rewrites_the_record_under_the_same_rkey(publish_service: PublishService, local_pds: LocalPds) -> None:
    account = local_pds.create_account("upd")
    published = publish_service.publish(account, MP3, album="Old").json()

    response = publish_service.call(UPDATE, account, {"uri": published["uri"], "title": "New title", "album": None})

    assert response.status_code == 200, response.text
    body = response.json()
    lexicons.validator().validate(UPDATE, "output", body)
    expected = {k: v for k, v in published["record"].items() if k != "album"} | {"title": "New title"}
    assert (body["uri"], body["record"]) == (published["uri"], expected)
    assert body["cid"] != published["cid"]
    [stored] = publish_service.pds_records(account)
    assert (stored["uri"], stored["cid"], stored["value"]) == (body["uri"], body["cid"], expected)
    [row] = publish_service.rows()
    assert (row["title"], row["album"], row["cid"], row["audio_state"]) == ("New title", None, body["cid"], "verified")


def test_an_update_that_changes_nothing_writes_nothing(publish_service: PublishService, local_pds: LocalPds) -> None:
    account = local_pds.create_account("same")
    published = publish_service.publish(account, MP3).json()
    [before] = publish_service.rows()

    response = publish_service.call(UPDATE, account, {"uri": published["uri"], "title": published["record"]["title"]})

    assert response.json() == {"uri": published["uri"], "cid": published["cid"], "record": published["record"]}
    assert publish_service.rows() == [before]


def test_a_publish_is_indexed_through_the_one_writer_and_jetstreams_copy_is_a_no_op(
    tmp_path: Path, local_pds: LocalPds
) -> None:
    with start_service(tmp_path, local_pds) as service:
        account = local_pds.create_account("idx")
        published = service.publish(account, MP3).json()
        [row] = service.rows()
        assert service.store.cursor() is None  # a local write is not a Jetstream event
        [stored] = service.pds_records(account)
        changed = service.store.reader().execute("SELECT changed_us FROM tracks").fetchall()
        # The same create as Jetstream delivers it: same rev (from the PDS commit), same cid.
        copy = events.commit(account.did, row["rkey"], row["rev"], "create", stored["value"], cid=stored["cid"])
        batch = service.index.planner.plan(wire(copy))
        asyncio.run(service.index.commit(batch, "jetstream"))

        assert (row["cid"], row["audio_state"], row["title"]) == (published["cid"], "verified", "Loopback Blues")
        assert service.rows() == [row]
        assert service.store.reader().execute("SELECT changed_us FROM tracks").fetchall() == changed
        assert service.store.cursor() is not None and service.store.cursor().source == "jetstream"
        handle = service.store.reader().execute("SELECT handle FROM accounts").fetchall()
        assert handle == [(account.handle,)]


def test_publish_to_r2_streams_a_large_file_in_parts_and_serves_it_by_redirect(
    tmp_path: Path, local_pds: LocalPds, r2_overrides: dict[str, str]
) -> None:
    path = write_wav(tmp_path / "big.wav", 20 * MiB, seed=7)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with start_service(tmp_path, local_pds, **r2_overrides) as service:
        account = local_pds.create_account("r2")
        with path.open("rb") as file:
            response = service.client.post(
                PUBLISH_PATH, data={"title": "Big", "artist": "A"}, files={"audio": ("big.wav", file)},
                headers=account.auth_headers,
            )

        assert response.status_code == 200, response.text
        record = response.json()["record"]
        key = f"{digest}.wav"
        assert record["audioUrl"] == f"{r2_overrides['R2_PUBLIC_URL']}/{key}"
        assert service.objects() == [key]
        head = service.client.head(f"/audio/{key}")
        assert (head.status_code, head.headers["content-length"], head.headers["content-type"]) == (
            200, str(path.stat().st_size), "audio/wav"
        )
        redirect = service.client.get(f"/audio/{key}")
        assert (redirect.status_code, redirect.headers["location"]) == (307, record["audioUrl"])
        downloaded = httpx.get(record["audioUrl"], timeout=60)
        assert hashlib.sha256(downloaded.content).hexdigest() == digest
        [row] = service.rows()
        assert (row["audio_url"], row["audio_state"], row["file_type"]) == (record["audioUrl"], "verified", "wav")
