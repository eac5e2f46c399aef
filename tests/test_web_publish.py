"""Publishing from the pages with an OAuth session (DPoP-bound tokens), through the real app to the real
PDS: the record shown first is the record written; edit and delete; failures leave nothing behind."""

from __future__ import annotations

import html
import re
from pathlib import Path

import httpx
import orjson
import pytest

from tests.fixtures.pds import LocalPds, PdsAccount, running_pds
from tests.fixtures.publish import DATA, PublishService
from tests.fixtures.web import Visitor, web_service

pytestmark = pytest.mark.slow  # end to end: the real PDS, its authorization server and the app

MP3 = DATA / "tone-3s.mp3"


def error_of(response: httpx.Response) -> tuple[int, str]:
    found = re.search(r'<p class="error" role="alert">(.*?)</p>', response.text, re.S)
    assert found is not None, response.text
    return response.status_code, html.unescape(found.group(1).strip())


def shown_record(page: httpx.Response) -> dict[str, object]:
    found = re.search(r'<pre class="record"[^>]*><code>(.*?)</code></pre>', page.text, re.S)
    assert found is not None, page.text
    record: dict[str, object] = orjson.loads(html.unescape(found.group(1)))
    return record


def hidden(page: httpx.Response, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]+)"', page.text)
    assert found is not None, page.text
    return found.group(1)


def preview(visitor: Visitor, audio: bytes, **fields: str) -> httpx.Response:
    token = visitor.csrf("/upload")
    values = {"title": "Loopback Blues", "artist": "The Fixtures"} | fields
    return visitor.client.post(
        "/upload", data={"csrf": token} | values, files={"audio": ("song.mp3", audio, "audio/mpeg")}
    )


def confirm(visitor: Visitor, page: httpx.Response) -> httpx.Response:
    return visitor.client.post("/upload/confirm", data={"csrf": hidden(page, "csrf"), "staged": hidden(page, "staged")})


def signed_in(visitor: Visitor, account: PdsAccount) -> None:
    assert visitor.sign_in(account).status_code == 303


def test_the_record_shown_is_the_record_written(web: PublishService, visitor: Visitor, local_pds: LocalPds) -> None:
    account = local_pds.create_account("shown")
    signed_in(visitor, account)

    page = preview(visitor, MP3.read_bytes(), album="Tests")

    assert page.status_code == 200
    record = shown_record(page)
    uri = html.unescape(re.findall(r'<code class="uri">(.*?)</code>', page.text)[0])
    assert web.nothing_left(account)  # a preview writes nothing
    published = confirm(visitor, page)
    assert published.status_code == 200, published.text
    assert "<h1>Published to ATProto</h1>" in published.text
    [stored] = web.pds_records(account)
    assert (stored["uri"], stored["value"]) == (uri, record)
    assert shown_record(published) == record
    rkey = uri.rsplit("/", 1)[1]
    pds_link = (
        f"{local_pds.pds_public_url}/xrpc/com.atproto.repo.getRecord?repo={account.did.replace(':', '%3A')}"
        f"&amp;collection=app.relay.track&amp;rkey={rkey}"
    )
    assert f'<a href="{pds_link}">' in published.text
    assert f'<a href="/track/{account.did}/{rkey}">' in published.text
    assert [(r["rkey"], r["audio_state"]) for r in web.rows()] == [(rkey, "verified")]
    assert f'href="/track/{account.did}/{rkey}">Loopback Blues</a>' in visitor.client.get("/").text
    audio_url = str(record["audioUrl"])
    ranged = visitor.client.get(audio_url, headers={"Range": "bytes=100-199"})
    assert (ranged.status_code, ranged.headers["content-range"], ranged.content) == (
        206, f"bytes 100-199/{MP3.stat().st_size}", MP3.read_bytes()[100:200]
    )
    # The preview is spent: confirming it again writes nothing more.
    assert error_of(confirm(visitor, page)) == (
        404, "this upload is no longer waiting (it was published, replaced or expired): upload it again"
    )
    assert len(web.pds_records(account)) == 1


def test_a_file_that_is_not_audio_is_refused_at_the_preview(
    web: PublishService, visitor: Visitor, local_pds: LocalPds
) -> None:
    account = local_pds.create_account("notaudio")
    signed_in(visitor, account)

    page = preview(visitor, b"just some text, honestly\n" * 40)

    assert error_of(page) == (400, "not an mp3, wav, ogg or flac file")
    assert "<h1>Upload a track</h1>" in page.text  # the form again, to choose another file
    assert web.nothing_left(account)


def test_blank_fields_are_named(web: PublishService, visitor: Visitor, local_pds: LocalPds) -> None:
    account = local_pds.create_account("blank")
    signed_in(visitor, account)

    page = preview(visitor, MP3.read_bytes(), title="   ", album="Kept album")

    assert error_of(page) == (400, "title must not be blank")
    assert 'value="Kept album"' in page.text  # the form comes back as it was typed
    assert web.nothing_left(account)


def test_edit_keeps_the_rkey_and_delete_removes_record_and_audio(
    web: PublishService, visitor: Visitor, local_pds: LocalPds
) -> None:
    account = local_pds.create_account("edit")
    signed_in(visitor, account)
    confirm(visitor, preview(visitor, MP3.read_bytes(), album="Old"))
    [stored] = web.pds_records(account)
    rkey = stored["uri"].rsplit("/", 1)[1]
    path = f"/track/{account.did}/{rkey}"
    assert 'href="' + path + '/edit">Edit</a>' in visitor.client.get(path).text

    edited = visitor.client.post(
        f"{path}/edit", data={"csrf": visitor.csrf(f"{path}/edit"), "title": "New title", "artist": "The Fixtures", "album": ""}
    )

    assert (edited.status_code, edited.headers["location"]) == (303, path)
    [after] = web.pds_records(account)
    assert after["uri"] == stored["uri"] and after["cid"] != stored["cid"]
    assert after["value"] == {k: v for k, v in stored["value"].items() if k != "album"} | {"title": "New title"}
    assert "<h1 id=\"title\">New title</h1>" in visitor.client.get(path).text

    deleted = visitor.client.post(f"{path}/delete", data={"csrf": visitor.csrf(f"{path}/delete")})

    assert deleted.status_code == 200 and "Its audio file was removed too." in deleted.text
    assert web.pds_records(account) == [] and web.objects() == []
    assert error_of(visitor.client.get(path)) == (404, f"no visible track at at://{account.did}/app.relay.track/{rkey}")


def test_nobody_else_may_change_a_track(web: PublishService, local_pds: LocalPds) -> None:
    owner, other = local_pds.create_account("owner"), local_pds.create_account("intruder")
    mine, theirs = Visitor(web), Visitor(web)
    try:
        signed_in(mine, owner)
        signed_in(theirs, other)
        confirm(mine, preview(mine, MP3.read_bytes()))
        [stored] = web.pds_records(owner)
        path = f"/track/{owner.did}/{stored['uri'].rsplit('/', 1)[1]}"

        assert "Edit</a>" not in theirs.client.get(path).text
        token = theirs.csrf("/upload")
        assert error_of(theirs.client.get(f"{path}/edit")) == (403, "only the track's owner may change it")
        assert error_of(theirs.client.post(f"{path}/delete", data={"csrf": token})) == (
            403, "only the track's owner may change it"
        )
        assert [r["uri"] for r in web.pds_records(owner)] == [stored["uri"]]
    finally:
        mine.close()
        theirs.close()


def test_the_pds_going_down_mid_publish_leaves_nothing_behind(tmp_path: Path) -> None:
    """A PDS of the test's own, stopped between the preview and the confirm: the audio stored for the
    publish is removed again, no row is indexed, and the preview comes back to retry the same record."""
    with running_pds() as pds, web_service(tmp_path, pds) as service:
        account = pds.create_account("down")
        visitor = Visitor(service)
        try:
            signed_in(visitor, account)
            page = preview(visitor, MP3.read_bytes())
            record = shown_record(page)
            pds.stop()
            failed = confirm(visitor, page)
        finally:
            visitor.close()
        status, message = error_of(failed)
        assert (status, message) == (
            502, f"the PDS at {pds.pds_public_url} is unreachable on com.atproto.repo.putRecord: ConnectError"
        )
        assert shown_record(failed) == record  # the same record, ready to retry
        assert service.objects() == [] and service.rows() == []
