"""A local Citus cluster for tests/citus/: a coordinator and two workers on this machine.

Each node is a throwaway PostgreSQL 15 cluster started like tests/pgcluster.py starts one (as the
``postgres`` user when running as root, in a temp dir that its reaper cleans up after a killed run),
with ``shared_preload_libraries = citus``. Each gets a database ``passthrough`` with the citus
extension; the coordinator registers itself and both workers. ``citus_missing()`` says why the
cluster cannot start (the citus extension not installed for those binaries), for the skip.

PASSTHROUGH_TEST_CITUS_BINDIR overrides the binaries (default /usr/lib/postgresql/15/bin).

``session_cluster(config)`` is the one cluster of a pytest session (tests/citus/ and, under
``PASSTHROUGH_TEST_CITUS=1``, the single-node suite's databases share it); ``ClusterDatabases`` makes those
databases: a distributed template on every node, and per-test copies of it on every node.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from pgcluster import PgServer, PgStartError, _start_bindir_cluster, reap_orphans

from pyapp.db import with_database

BINDIR_ENV = "PASSTHROUGH_TEST_CITUS_BINDIR"
CITUS_ENV = "PASSTHROUGH_TEST_CITUS"


def on_citus() -> bool:
    """Whether the suite runs on the Citus cluster ($PASSTHROUGH_TEST_CITUS=1, `make test-citus`)."""
    return os.environ.get(CITUS_ENV, "") not in ("", "0")
DEFAULT_BINDIR = "/usr/lib/postgresql/15/bin"
DATABASE = "passthrough"
WORKERS = 2

# Every node: Citus loaded; two-phase commit for transactions that write on several workers; few shards,
# since each shard of each table is a table on a worker and the machine running the tests is small.
NODE_SETTINGS = {
    "shared_preload_libraries": "citus",
    "max_prepared_transactions": "100",
    "max_connections": "200",
    # each database with the citus extension runs a maintenance daemon, a background worker: the single-node
    # suite under $PASSTHROUGH_TEST_CITUS has several databases open at once (tests/conftest.py)
    "max_worker_processes": "32",
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


def _prepare_node(server: PgServer, database: str = DATABASE) -> None:
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    with psycopg.connect(with_database(server.url, database), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION citus")


def _register_nodes(url: str, coordinator: PgServer, workers: list[PgServer]) -> None:
    """In the coordinator's database ``url``: the coordinator itself (reference tables get a copy there, which
    the writer's joins with them need), then each worker."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (_port(coordinator),))
        for worker in workers:
            conn.execute("SELECT citus_add_node('127.0.0.1', %s)", (_port(worker),))


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
        _register_nodes(cluster.url, cluster.coordinator, cluster.workers)
        with psycopg.connect(cluster.coordinator.url) as conn:
            cluster.coordinator.version = conn.execute("SHOW server_version").fetchone()[0]
            cluster.coordinator.version_num = int(conn.execute("SHOW server_version_num").fetchone()[0])
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


# --------------------------------------------------------------------------- the single-node suite's databases


def _on_nodes(action: Callable[[PgServer], None], nodes: list[PgServer]) -> None:
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        list(pool.map(action, nodes))


def _close_to_connections(server: PgServer, database: str, timeout: float = 30) -> None:
    """No connection to ``database`` on this node, and none allowed, so that it can be a template (CREATE
    DATABASE refuses a template anyone is connected to). Citus keeps a maintenance daemon connected to every
    database with the extension; terminated, it is started again only by the next connection."""
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(database)))
        deadline = time.monotonic() + timeout
        while conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                           " WHERE datname = %s AND pid <> pg_backend_pid()", (database,)).fetchone()[0]:
            if time.monotonic() > deadline:
                raise PgStartError(f"connections to {database} on {server.url} did not end")
            time.sleep(0.05)


class ClusterDatabases:
    """The single-node suite's databases on the cluster (tests/conftest.py, under $PASSTHROUGH_TEST_CITUS).

    A distributed database is a database of the same name on the coordinator and on each worker (the coordinator
    reaches a shard in the worker's database of its own database's name). So the template is made on every node
    (citus, the nodes registered, Passthrough migrated and distributed), and a test's database is a copy of it
    made on every node at once: the copies hold the shards and Citus's metadata, which names nodes by host and
    port and objects by oid, both the same in every copy. Any other template gives a plain coordinator database.
    """

    def __init__(self, cluster: CitusCluster) -> None:
        self.cluster = cluster
        self._nodes: dict[str, list[PgServer]] = {}  # database -> the nodes that hold it

    @property
    def admin_url(self) -> str:
        return self.cluster.coordinator.url

    def create_template(self, name: str, migrate: Callable[[str], None], shard_count: int) -> None:
        """Make ``name`` on every node with citus, register the nodes, ``migrate(url)`` it on the coordinator,
        distribute it into ``shard_count`` shards per table, then close it to connections."""
        nodes = [self.cluster.coordinator, *self.cluster.workers]
        self._nodes[name] = nodes
        _on_nodes(lambda node: _prepare_node(node, name), nodes)
        url = with_database(self.cluster.coordinator.url, name)
        _register_nodes(url, self.cluster.coordinator, self.cluster.workers)
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT set_config('citus.shard_count', %s, false)", (str(shard_count),))
            conn.execute("SELECT * FROM passthrough.distribute()")
        _on_nodes(lambda node: _close_to_connections(node, name), nodes)

    def create(self, name: str, template: str = "template0") -> str:
        """A copy of ``template`` on every node that holds it (on the coordinator only for template0)."""
        nodes = self._nodes.get(template, [self.cluster.coordinator])
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))

        def create_on(node: PgServer) -> None:
            with psycopg.connect(node.url, autocommit=True) as conn:
                conn.execute(statement)

        self._nodes[name] = nodes
        _on_nodes(create_on, nodes)
        return with_database(self.cluster.coordinator.url, name)

    def drop(self, name: str) -> None:
        """Closed to connections on every node first: each node's Citus maintenance daemon keeps connections to
        the other nodes' databases of that name, and would reconnect to one being dropped (and a daemon busy on
        a remote call can outlast DROP DATABASE's 5 seconds of waiting for it)."""
        nodes = self._nodes.pop(name, [self.cluster.coordinator])
        dropping = sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))

        def drop_on(node: PgServer) -> None:
            with psycopg.connect(node.url, autocommit=True) as conn:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                    _close_to_connections(node, name)
                    conn.execute(dropping)

        _on_nodes(drop_on, nodes)
