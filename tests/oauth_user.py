"""A person at the reference PDS's authorization pages, played over HTTP through the pages' own API.

The PDS's sign-in page is a script that calls `/@atproto/oauth-provider/~api/sign-in` and `.../consent`;
this does what that script does, with the headers a browser would send (the API refuses requests that
are not same-origin fetches from the authorize page: `Sec-Fetch-*`, `Origin`, `Referer`, and the CSRF
cookie echoed in `x-csrf-token`). Its cookies are `Secure`, which httpx will not send over http, so they
are carried by hand. `consent(scope=...)` lets the person grant less than was asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

API = "/@atproto/oauth-provider/~api"


@dataclass
class PdsUser:
    issuer: str  # the PDS's public URL (http://localhost:<port>), where its pages live
    handle: str
    password: str
    cookies: dict[str, str] = field(default_factory=dict)

    def authorize(self, authorize_url: str, *, scope: str | None = None) -> str:
        """Sign in and consent at `authorize_url`; return where the PDS sends the browser back to."""
        page = self._get(authorize_url, {"sec-fetch-site": "cross-site"})
        assert page.status_code == 200, page.text
        self._remember(page)
        headers = {
            "sec-fetch-mode": "same-origin",
            "sec-fetch-site": "same-origin",
            "origin": self.issuer,
            "referer": authorize_url,
            "x-csrf-token": self.cookies["csrf-token"],
        }
        signed_in = self._post(f"{API}/sign-in", headers, {"locale": "en", "username": self.handle, "password": self.password, "remember": True})
        assert signed_in.status_code == 200, signed_in.text
        sub = signed_in.json()["account"]["sub"]
        consent = {"sub": sub} | ({"scope": scope} if scope is not None else {})
        consented = self._post(f"{API}/consent", headers, consent)
        assert consented.status_code == 200, consented.text
        back = self._get(consented.json()["url"], {"sec-fetch-site": "same-origin", "referer": authorize_url})
        assert back.status_code in (302, 303), back.text
        return back.headers["location"]

    def reject(self, authorize_url: str) -> str:
        """Decline at `authorize_url` (the page's "Deny"); return where the PDS sends the browser back to."""
        page = self._get(authorize_url, {"sec-fetch-site": "cross-site"})
        assert page.status_code == 200, page.text
        self._remember(page)
        headers = {
            "sec-fetch-mode": "same-origin",
            "sec-fetch-site": "same-origin",
            "origin": self.issuer,
            "referer": authorize_url,
            "x-csrf-token": self.cookies["csrf-token"],
        }
        rejected = self._post(f"{API}/reject", headers, {})
        assert rejected.status_code == 200, rejected.text
        back = self._get(rejected.json()["url"], {"sec-fetch-site": "same-origin", "referer": authorize_url})
        assert back.status_code in (302, 303), back.text
        return back.headers["location"]

    def _get(self, url: str, headers: dict[str, str]) -> httpx.Response:
        headers = {"sec-fetch-mode": "navigate", "sec-fetch-dest": "document", "cookie": self._cookie()} | headers
        return httpx.get(url, headers=headers, timeout=30)

    def _post(self, path: str, headers: dict[str, str], body: dict[str, object]) -> httpx.Response:
        response = httpx.post(self.issuer + path, json=body, headers=headers | {"cookie": self._cookie()}, timeout=30)
        self._remember(response)
        return response

    def _cookie(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())

    def _remember(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            name, _, value = header.split(";", 1)[0].partition("=")
            self.cookies[name.strip()] = value
