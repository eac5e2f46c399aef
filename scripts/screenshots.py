"""Screenshots of every page for the README, taken in Debian's Chromium against a real run of the app.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Starts the test PDS and PLC (tests/pds), the app on loopback, publishes a few tracks through the XRPC
publish endpoint, signs a person in through the PDS's own pages in the browser, and saves a PNG of each
page (the discovery page also at a phone's width). Only loopback traffic.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.browser import launch  # noqa: E402
from tests.fixtures.pds import running_pds  # noqa: E402
from tests.fixtures.publish import DATA, PublishService  # noqa: E402
from tests.fixtures.web import web_service  # noqa: E402

TRACKS = [
    ("tone-3s.mp3", "Loopback Blues", "The Fixtures", "Local Sessions"),
    ("tone-3s.ogg", "Nonce Waltz", "DPoP & the Proofs", None),
    ("tone-3s.flac", "Sealed at Rest", "AES-GCM Quartet", "Key Derivation"),
]
DESKTOP = {"width": 1100, "height": 820}
PHONE = {"width": 390, "height": 844}


def publish_some(service: PublishService) -> None:
    pds = service.pds
    artists = {artist: pds.create_account(artist.split()[0].lower().strip("&")) for _, _, artist, _ in TRACKS}
    for name, title, artist, album in TRACKS:
        fields = {"title": title, "artist": artist} | ({"album": album} if album else {})
        answer = service.publish(artists[artist], DATA / name, filename=name, **fields)
        answer.raise_for_status()


def shoot(page: Page, out: Path, name: str) -> None:
    page.screenshot(path=str(out / f"{name}.png"))
    print(out / f"{name}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="relay-shots-") as scratch, running_pds() as pds:
        with web_service(Path(scratch), pds) as service, sync_playwright() as playwright:
            publish_some(service)
            browser = launch(playwright)
            page = browser.new_page(viewport=DESKTOP)
            page.goto(service.url + "/")
            shoot(page, args.out, "discover")
            page.get_by_role("link", name="Loopback Blues").click()
            shoot(page, args.out, "track")
            page.get_by_role("link", name="@").first.click()
            shoot(page, args.out, "profile")
            page.get_by_role("link", name="Sign in").click()
            person = pds.create_account("listener")
            page.get_by_label("Your handle, DID or PDS address").fill(person.handle)
            shoot(page, args.out, "signin")
            page.get_by_role("button", name="Sign in").click()
            page.get_by_placeholder("Password").fill(person.password)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("button", name="Authorize").wait_for()
            shoot(page, args.out, "pds-consent")
            page.get_by_role("button", name="Authorize").click()
            page.get_by_role("link", name="Upload").click()
            page.get_by_label("Audio file (mp3, wav, ogg or flac)").set_input_files(str(DATA / "tone-3s.mp3"))
            page.get_by_label("Title").fill("Preview Before Publish")
            page.get_by_label("Artist").fill("The Listener")
            shoot(page, args.out, "upload")
            page.get_by_role("button", name="Preview the record").click()
            shoot(page, args.out, "preview")
            page.get_by_role("button", name="Publish to ATProto").click()
            shoot(page, args.out, "published")
            phone = browser.new_page(viewport=PHONE)
            phone.goto(service.url + "/")
            shoot(phone, args.out, "discover-phone")
            browser.close()


if __name__ == "__main__":
    main()
