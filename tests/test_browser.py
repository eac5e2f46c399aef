"""The whole web app in a real browser (Debian's Chromium): sign in through the reference PDS's own
authorization pages, upload a real audio file, read the record shown, publish, find the track on `/`,
play it, edit it, delete it, sign out."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from playwright.sync_api import BrowserContext, Dialog, Page, expect

from tests.fixtures.pds import LocalPds
from tests.fixtures.publish import DATA, PublishService

pytestmark = pytest.mark.slow  # end to end: a real browser, the real PDS, the app

TITLE = "Loopback <script>alert(1)</script> Blues"


def refuse_dialogs(page: Page) -> list[str]:
    opened: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        opened.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return opened


def playing_time(page: Page) -> float:
    return float(page.locator("audio").first.evaluate("audio => audio.currentTime"))


def test_sign_in_upload_preview_publish_play_edit_delete_sign_out(
    web: PublishService, local_pds: LocalPds, browser_context: BrowserContext, tmp_path: Path
) -> None:
    account = local_pds.create_account("browser")
    page = browser_context.new_page()
    dialogs = refuse_dialogs(page)
    page.goto(web.url + "/")
    expect(page.get_by_text("No tracks yet.")).to_be_visible()

    # Sign in: our form, then the PDS's own pages (password, then consent), then back here.
    page.get_by_role("link", name="Sign in").click()
    page.get_by_label("Your handle, DID or PDS address").fill(account.handle)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{local_pds.pds_public_url}/oauth/authorize?*")
    page.get_by_placeholder("Password").fill(account.password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(web.url + "/")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(page.get_by_role("link", name="Your tracks")).to_have_text(f"@{account.handle}")

    # Upload: the exact record is shown before anything is written.
    page.get_by_role("link", name="Upload").click()
    page.get_by_label("Audio file (mp3, wav, ogg or flac)").set_input_files(str(DATA / "tone-3s.mp3"))
    page.get_by_label("Title").fill(TITLE)
    page.get_by_label("Artist").fill("The Fixtures")
    page.get_by_label("Album").fill("Browser Tests")
    page.get_by_role("button", name="Preview the record").click()
    expect(page.get_by_role("heading", name="Check the record")).to_be_visible()
    shown = orjson.loads(page.locator("pre.record").inner_text())
    assert {k: shown[k] for k in ("$type", "title", "artist", "album", "fileType", "duration")} == {
        "$type": "app.relay.track",
        "title": TITLE,
        "artist": "The Fixtures",
        "album": "Browser Tests",
        "fileType": "mp3",
        "duration": 3,
    }
    assert web.pds_records(account) == []

    page.get_by_role("button", name="Publish to ATProto").click()
    expect(page.get_by_role("heading", name="Published to ATProto")).to_be_visible()
    [stored] = web.pds_records(account)
    assert stored["value"] == shown
    expect(page.locator("code.uri")).to_have_text(stored["uri"])

    # Found on the discovery page, and it plays (and seeks: the audio route answers Range requests).
    page.get_by_role("link", name="Discover").click()
    expect(page.get_by_role("link", name=TITLE)).to_be_visible()
    page.locator("audio").first.evaluate("audio => audio.play()")
    page.wait_for_function("() => document.querySelector('audio').currentTime > 0.3", timeout=10_000)
    page.locator("audio").first.evaluate("audio => { audio.currentTime = 2.0; }")
    page.wait_for_function("() => document.querySelector('audio').currentTime > 2.1", timeout=10_000)
    assert playing_time(page) > 2.1

    # Edit it: the same record key, a new title.
    page.get_by_role("link", name=TITLE).click()
    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Title").fill("Renamed in the Browser")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", name="Renamed in the Browser")).to_be_visible()
    [edited] = web.pds_records(account)
    assert edited["uri"] == stored["uri"] and edited["value"]["title"] == "Renamed in the Browser"

    # Delete it: the record, then the audio.
    page.get_by_role("link", name="Delete").click()
    page.get_by_role("button", name="Delete the track").click()
    expect(page.get_by_role("heading", name="Deleted")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("Its audio file was removed too.")
    assert web.pds_records(account) == [] and web.objects() == []
    page.get_by_role("link", name="Discover").click()
    expect(page.get_by_text("No tracks yet.")).to_be_visible()

    # Sign out.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    assert web.store.reader().execute("SELECT count(*) FROM oauth_sessions").fetchone() == (0,)
    assert dialogs == []  # the <script> in the title never ran


def test_the_keyboard_reaches_the_content_and_the_page_fits_a_phone(
    web: PublishService, browser_context: BrowserContext
) -> None:
    page = browser_context.new_page()
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(web.url + "/")

    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"
    page.keyboard.press("Tab")
    expect(page.get_by_label("Search tracks by title, artist or album")).to_be_focused()
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360  # nothing wider than the phone
    page.keyboard.type("nothing here")
    page.keyboard.press("Enter")
    expect(page.get_by_text("No tracks match that search.")).to_be_visible()
    assert re.search(r"\?q=nothing\+here$", page.url)
