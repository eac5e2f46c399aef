"""Build the wheel, install it (not editable) into a scratch venv, and check that what it installs runs.

`scripts/test` runs this: an editable install reads the lexicons, the zstd dictionary, the templates and
the static files from the source tree, so only an installed wheel shows whether they ship. The wheel is
built from a fresh copy of the files git would commit (no stale `build/` or `*.egg-info` can smuggle data
in). From a directory outside the tree, the installed `relay-appview serve --no-index` must answer
`/xrpc/_health`, refuse a bad `limit` with the lexicon's own error, and serve the discovery page with its
stylesheet. The scratch venv is kept in `.venv-wheel` between runs (the project is reinstalled, and only
dependencies it lacks are added).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-wheel"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="relay-wheel-") as scratch:
        dist, source = Path(scratch) / "dist", Path(scratch) / "source"
        _copy_tree(source)
        _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(source)])
        [wheel] = dist.glob("relay_appview-*.whl")
        if not (VENV / "bin" / "python").exists():
            _run([sys.executable, "-m", "venv", str(VENV)])
            _run([str(VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(wheel)])
        else:
            _run([str(VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "--force-reinstall",
                  "--no-deps", str(wheel)])
            # Then whatever the project has come to depend on since the venv was made.
            _run([str(VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(wheel)])
        return _serve_and_ask(Path(scratch))


def _copy_tree(target: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        origin = ROOT / name
        if not origin.exists() and not origin.is_symlink():
            continue  # deleted in the working tree, not yet in the index
        copy = target / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_symlink():
            copy.symlink_to(os.readlink(origin))
        else:
            shutil.copy2(origin, copy)


def _serve_and_ask(workdir: Path) -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "R2_"))}
    env["RELAY_LOG_LEVEL"] = "WARNING"
    env["RELAY_BACKFILL_URLS"] = ""  # never the public relay
    command = [str(VENV / "bin" / "relay-appview"), "serve", "--no-index", "--port", str(port), "--db", "x.duckdb"]
    server = subprocess.Popen(command, cwd=workdir, env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        health = _wait_for(f"{base}/xrpc/_health", server)
        assert health.status_code == 200 and "version" in health.json(), health.text
        bad = httpx.get(f"{base}/xrpc/app.relay.feed.getTracks", params={"limit": 500})
        body = bad.json()
        assert bad.status_code == 400 and body["error"] == "InvalidRequest", bad.text
        assert "maximum 100" in body["message"], body  # the lexicon's own bound, read from the installed file
        page, css = httpx.get(f"{base}/"), httpx.get(f"{base}/static/style.css")  # templates and static files ship
        assert page.status_code == 200 and "<h1>Newest tracks</h1>" in page.text, page.text
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css"), css.text
    finally:
        server.terminate()
        server.wait(30)
    print(f"wheel: installed relay-appview answered /xrpc/_health and / and refused limit=500: {body['message']}")
    return 0


def _wait_for(url: str, server: subprocess.Popen[str]) -> httpx.Response:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the installed server exited with {server.returncode}:\n{server.stderr.read()}")
        try:
            return httpx.get(url)
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("the installed server did not come up")


def _run(command: list[str]) -> None:
    subprocess.run(command, check=True)


if __name__ == "__main__":
    sys.exit(main())
