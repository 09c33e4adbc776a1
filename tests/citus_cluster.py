"""A local Citus cluster for tests/citus/: a coordinator and two workers on this machine.

Each node is a throwaway PostgreSQL 15 cluster started like tests/pgcluster.py starts one (as the
``postgres`` user when running as root, in a temp dir that its reaper cleans up after a killed run),
with ``shared_preload_libraries = citus``. Each gets a database ``passthrough`` with the citus
extension; the coordinator registers itself and both workers. ``citus_missing()`` says why the
cluster cannot start (the citus extension not installed for those binaries), for the skip.

PASSTHROUGH_TEST_CITUS_BINDIR overrides the binaries (default /usr/lib/postgresql/15/bin).
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from pgcluster import PgServer, PgStartError, _start_bindir_cluster, reap_orphans

from pyapp.db import with_database

BINDIR_ENV = "PASSTHROUGH_TEST_CITUS_BINDIR"
DEFAULT_BINDIR = "/usr/lib/postgresql/15/bin"
DATABASE = "passthrough"
WORKERS = 2

# Every node: Citus loaded; two-phase commit for transactions that write on several workers; few shards,
# since each shard of each table is a table on a worker and the machine running the tests is small.
NODE_SETTINGS = {
    "shared_preload_libraries": "citus",
    "max_prepared_transactions": "100",
    "max_connections": "200",
    "wal_level": "logical",  # the shard rebalancer moves shards by logical replication
    "citus.shard_count": "8",
    # nodes talk over loopback; and libpq in a server started from root's environment looks for root's certificate
    "citus.node_conninfo": "sslmode=disable",
}


def bindir() -> Path:
    return Path(os.environ.get(BINDIR_ENV) or DEFAULT_BINDIR)


def citus_missing(binaries: Path | None = None) -> str | None:
    """Why a Citus cluster cannot be started from these binaries, or None when it can."""
    binaries = binaries or bindir()
    pg_config = binaries / "pg_config"
    if not (binaries / "postgres").is_file() or not pg_config.is_file():
        return f"no PostgreSQL server binaries and pg_config in {binaries} (${BINDIR_ENV})"
    found = subprocess.run([str(pg_config), "--sharedir", "--pkglibdir"], capture_output=True, text=True,
                           check=True).stdout.split()
    sharedir, pkglibdir = Path(found[0]), Path(found[1])
    if not (sharedir / "extension" / "citus.control").is_file() or not (pkglibdir / "citus.so").is_file():
        return (f"the citus extension is not installed for {pg_config} (no {sharedir}/extension/citus.control "
                "or citus.so): build it with scripts/build-citus.sh SRC, see docs/scale-out.md")
    return None


@dataclass
class CitusCluster:
    coordinator: PgServer
    workers: list[PgServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The coordinator's ``passthrough`` database: where Passthrough is installed and called."""
        return with_database(self.coordinator.url, DATABASE)

    def worker_urls(self) -> list[str]:
        return [with_database(w.url, DATABASE) for w in self.workers]

    def stop(self) -> None:
        for node in (self.coordinator, *self.workers):
            node.stop()


def _port(server: PgServer) -> int:
    return int(server.url.rsplit(":", 1)[1].split("/", 1)[0])


def _prepare_node(server: PgServer) -> None:
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}")
    with psycopg.connect(with_database(server.url, DATABASE), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION citus")


def start_citus_cluster(binaries: Path | None = None) -> CitusCluster:
    """Start a coordinator and two workers, each with the citus extension in database ``passthrough``."""
    binaries = binaries or bindir()
    reason = citus_missing(binaries)
    if reason:
        raise PgStartError(reason)
    reap_orphans()
    started: list[PgServer] = []
    try:
        with ThreadPoolExecutor(max_workers=1 + WORKERS) as pool:
            futures = [pool.submit(_start_bindir_cluster, binaries, NODE_SETTINGS) for _ in range(1 + WORKERS)]
            errors = []
            for future in futures:
                try:
                    started.append(future.result())
                except Exception as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]
            list(pool.map(_prepare_node, started))
        cluster = CitusCluster(coordinator=started[0], workers=started[1:])
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (_port(cluster.coordinator),))
            for worker in cluster.workers:
                conn.execute("SELECT citus_add_node('127.0.0.1', %s)", (_port(worker),))
        return cluster
    except BaseException:
        for server in started:
            server.stop()
        raise


def add_worker(cluster: CitusCluster, binaries: Path | None = None) -> PgServer:
    """Start one more worker, register it with the coordinator (``citus_add_node``) and keep it in
    ``cluster.workers``, so that ``cluster.stop()`` stops it too. No shard moves to it until a rebalance."""
    server = _start_bindir_cluster(binaries or bindir(), NODE_SETTINGS)
    cluster.workers.append(server)
    _prepare_node(server)
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute("SELECT citus_add_node('127.0.0.1', %s)", (_port(server),))
    return server
