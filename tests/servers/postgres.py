"""A private PostgreSQL cluster in a temporary directory, on 127.0.0.1 and a free port.

Debian's server binaries (`apt-get install postgresql`; scripts/test installs them) run as the `postgres`
user when we are root, since the server refuses to run as root. The data directory lives under /tmp, owned
by that user, and goes when the cluster stops. Durability is switched off (fsync, full-page writes): the
tests kill our processes, not the machine, and the page cache survives a process; a fast shutdown
(`restart`) writes everything out anyway.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SERVER_OPTIONS = (
    "-c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=300 "
    "-c shared_buffers=256MB -c max_wal_size=4GB"
)


def binaries() -> Path | None:
    """The newest installed server's bin directory, if any."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    def __init__(self, bin_dir: Path, options: str = SERVER_OPTIONS) -> None:
        self.bin = bin_dir
        self.options = options
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="relay-pg-"))
        self.data = self.dir / "data"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def start(self) -> Cluster:
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self._pg_ctl("start", "-o", f"-k {self.dir} -h 127.0.0.1 -p {self.port} {self.options}", "-l",
                     str(self.dir / "log"))
        return self

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("stop", "-m", mode)

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", *args)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        started = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, timeout=90, cwd=self.dir)
        if result.returncode != 0:
            log = (self.dir / "log").read_text() if (self.dir / "log").exists() else ""
            raise RuntimeError(f"{program} {args[:1]} failed after {time.monotonic() - started:.1f}s: "
                               f"{result.stderr or result.stdout}\n{log[-2000:]}")
