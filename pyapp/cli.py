"""The ``passthrough`` command.

Every subcommand finds its database the same way (see ``open_database``):

1. ``--database-url URL``, else
2. ``$PASSTHROUGH_DATABASE_URL``, else
3. the embedded PostgreSQL 18 under ``--data-dir`` / ``$PASSTHROUGH_DATA_DIR`` /
   ``./.passthrough`` (started for the duration of the command, stopped
   cleanly afterwards unless another process is still using it).

Exit status: 0 on success, 1 on a database or migration error, 2 on bad usage,
130 when interrupted (except ``serve``, for which Ctrl-C/SIGTERM is the normal
way to stop and exits 0).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyapp import __version__
from pyapp.serving import add_connection_options, default_workers
from pyapp.db import connect
from pyapp.web.config import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_EVENTS, DEFAULT_MAX_SNAPSHOT_BYTES
from pyapp.web.config import DEFAULT_MAX_SNAPSHOT_UPLOADS, DEFAULT_READ_STATEMENT_TIMEOUT

DATABASE_URL_ENV = "PASSTHROUGH_DATABASE_URL"
DEBUG_ENV = "PASSTHROUGH_DEBUG"


class CommandError(Exception):
    """An expected failure: printed as ``error: ...`` and exit status 1."""


# --------------------------------------------------------------------------- database resolution


@dataclass
class Database:
    url: str
    source: str  # human-readable: where the URL came from
    psql: str = "psql"  # psql executable to suggest

    @property
    def psql_command(self) -> str:
        return f"{_shell_quote(self.psql)} {_shell_quote(self.url, prefer_double=True)}"


@contextmanager
def open_database(args: argparse.Namespace) -> Iterator[Database]:
    """Resolve the database for any subcommand (the one place that decides)."""
    url = args.database_url or os.environ.get(DATABASE_URL_ENV)
    if url:
        origin = "--database-url" if args.database_url else f"${DATABASE_URL_ENV}"
        yield Database(url=url, source=f"{_redact(url)} (from {origin})")
        return

    from pyapp.embedded import PG_MAJOR, EmbeddedPostgres

    pg = EmbeddedPostgres(args.data_dir)
    _info(f"embedded PostgreSQL {PG_MAJOR}: {pg.pgdata} (starting it unless already running)")
    try:
        pg.start()
    except Exception as exc:
        raise CommandError(f"could not start the embedded PostgreSQL in {pg.pgdata}: {exc}") from exc
    try:
        assert pg.url is not None
        yield Database(url=pg.url, source=f"embedded PostgreSQL {PG_MAJOR} ({pg.pgdata})", psql=str(pg.psql_path))
    finally:
        with _signals_deferred():  # a second Ctrl-C must not leave the server half-stopped
            stopped = pg.stop()
        _info("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL left running for other processes")


# --------------------------------------------------------------------------- commands


def cmd_serve(args: argparse.Namespace) -> int:
    with open_database(args) as db:
        if args.no_migrate:
            _info("migrations: skipped (--no-migrate)")
        else:
            _report_migrations(_run_migrations(db.url))
        print(f"database:     {db.source}", flush=True)
        print(f"database URL: {db.url}", flush=True)
        print(f"psql:         {db.psql_command}", flush=True)
        try:
            serve_forever(db.url, args.host, args.port, max_events=args.max_events, max_body_bytes=args.max_body_bytes,
                          max_snapshot_bytes=args.max_snapshot_bytes, cors_origins=_origins(args.cors_origins),
                          cors_private_origins=_origins(args.cors_private_origins), workers=args.workers,
                          access_log=args.access_log, max_snapshot_uploads=args.max_snapshot_uploads,
                          read_statement_timeout=args.read_statement_timeout,
                          connections=(args.max_connections, args.header_timeout, args.body_timeout))
        except KeyboardInterrupt:
            _info("shutting down")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _origins(text: str) -> tuple[str, ...]:
    """A comma-separated list of CORS origins (empty: none)."""
    return tuple(o.strip() for o in text.split(",") if o.strip())


def serve_forever(url: str, host: str, port: int, *, max_events: int, max_body_bytes: int,
                  max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES, cors_origins: tuple[str, ...] = ("*",),
                  cors_private_origins: tuple[str, ...] = (), workers: int | None = 1,
                  access_log: bool = False, max_snapshot_uploads: int = DEFAULT_MAX_SNAPSHOT_UPLOADS,
                  read_statement_timeout: float = DEFAULT_READ_STATEMENT_TIMEOUT,
                  connections: tuple[Any, float, float] = (None, 10.0, 20.0)) -> None:
    """Serve the HTTP API (pyapp/web) on host:port until Ctrl-C / SIGTERM (pyapp/serving.py). ``connections``:
    --max-connections, --header-timeout, --body-timeout."""
    from pyapp import serving
    from pyapp.web import ApiConfig

    config = ApiConfig(max_events=max_events, max_body_bytes=max_body_bytes, max_snapshot_bytes=max_snapshot_bytes,
                       cors_origins=cors_origins, cors_private_origins=cors_private_origins,
                       max_snapshot_uploads=max_snapshot_uploads, read_statement_timeout=read_statement_timeout)
    try:
        config, workers, sizing = serving.sized_config(url, config, workers)
    except ValueError as exc:
        raise CommandError(f"--workers: {exc}") from None
    try:
        limits = serving.connection_limits(*connections, serving.raise_open_file_limit())
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    _info(f"HTTP API on http://{host}:{port} (OpenAPI: /openapi.json): {sizing}; press Ctrl-C to stop")
    serving.serve(url, host, port, config, workers, access_log, limits)


def run_sql(args: argparse.Namespace, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """One statement in one transaction on the command's database; its rows. For the small commands
    (enable, disable, keys, webhooks) whose callers pass a literal statement and parameters."""
    import psycopg

    with open_database(args) as db:
        _info(f"database: {db.source}")
        try:
            with connect(db.url) as conn:  # commits on clean exit
                return conn.execute(sql, params).fetchall()
        except (psycopg.errors.UndefinedFunction, psycopg.errors.InvalidSchemaName) as exc:
            raise CommandError(f"{_pg_message(exc)}\nhint: run `passthrough migrate` first") from exc


def cmd_migrate(args: argparse.Namespace) -> int:
    with open_database(args) as db:
        _info(f"database: {db.source}")
        _report_migrations(_run_migrations(db.url))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from pyapp import migrate

    with open_database(args) as db:
        _info(f"database: {db.source}")
        with connect(db.url) as conn:
            rows = migrate.status(conn)
        _print_rows(rows, empty="no migrations known")
    return 0


def cmd_enable(args: argparse.Namespace) -> int:
    return _call_switch(args, "enable")


def cmd_disable(args: argparse.Namespace) -> int:
    return _call_switch(args, "disable")


def _call_switch(args: argparse.Namespace, what: str) -> int:
    sql = {"enable": "SELECT passthrough.enable()", "disable": "SELECT passthrough.disable()"}[what]
    run_sql(args, sql, ())
    print(f"passthrough {what}d", flush=True)
    return 0


# --------------------------------------------------------------------------- helpers


def _run_migrations(url: str) -> list[str]:
    from pyapp import migrate

    with connect(url) as conn:  # commits on clean exit, rolls back on error
        applied = migrate.migrate(conn)
    return list(applied)


def _report_migrations(applied: list[str]) -> None:
    if applied:
        _info(f"migrations: applied {len(applied)}: {', '.join(applied)}")
    else:
        _info("migrations: up to date")


def _print_rows(rows: Sequence[dict[str, Any]], *, empty: str) -> None:
    if not rows:
        print(empty, flush=True)
        return
    from rich.console import Console
    from rich.table import Table

    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    table = Table()
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def _redact(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return url
    return url.replace(f":{password}@", ":***@", 1) if password else url


def _info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _shell_quote(text: str, *, prefer_double: bool = False) -> str:
    if prefer_double and not any(ch in text for ch in '"$`\\!'):
        return f'"{text}"'
    return shlex.quote(text)


def _pg_message(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if not primary:
        return str(exc).strip()
    text = primary
    for label, attr in (("detail", "message_detail"), ("hint", "message_hint")):
        value = getattr(diag, attr, None)
        if value:
            text += f"\n{label}: {value}"
    return text


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM/SIGHUP for the duration (main thread only)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# --------------------------------------------------------------------------- argument parsing


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url",
        metavar="URL",
        help=f"PostgreSQL URL (default: ${DATABASE_URL_ENV}; if unset, use the embedded PostgreSQL)",
    )
    common.add_argument(
        "--data-dir",
        metavar="DIR",
        type=Path,
        help="embedded PostgreSQL data dir (default: $PASSTHROUGH_DATA_DIR or ./.passthrough)",
    )

    parser = argparse.ArgumentParser(prog="passthrough", description="Passthrough audiences service.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[common], help="migrate, then serve until Ctrl-C")
    env = os.environ.get
    serve.add_argument("--host", default=env("PASSTHROUGH_HOST", "127.0.0.1"),
                       help="HTTP listen address (default: $PASSTHROUGH_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, default=env("PASSTHROUGH_PORT", "8080"),
                       help="HTTP listen port (default: $PASSTHROUGH_PORT or 8080)")
    serve.add_argument("--no-migrate", action="store_true", help="do not apply pending migrations on start")
    serve.add_argument("--access-log", action="store_true", default=env("PASSTHROUGH_ACCESS_LOG", "") == "1",
                       help="log a line per request (default: $PASSTHROUGH_ACCESS_LOG=1, else off)")
    serve.add_argument("--workers", type=_positive_int, default=env("PASSTHROUGH_WORKERS"),
                       help="server processes sharing the port (default: $PASSTHROUGH_WORKERS, else one per CPU, "
                       f"here {default_workers()}, as many as half of the server's max_connections allows)")
    serve.add_argument("--max-events", type=int, default=env("PASSTHROUGH_MAX_EVENTS", str(DEFAULT_MAX_EVENTS)),
                       help=f"events per POST /v3/events (default: $PASSTHROUGH_MAX_EVENTS or {DEFAULT_MAX_EVENTS})")
    serve.add_argument("--max-body-bytes", type=int,
                       default=env("PASSTHROUGH_MAX_BODY_BYTES", str(DEFAULT_MAX_BODY_BYTES)),
                       help="request body limit, before and after gzip decompression "
                       f"(default: $PASSTHROUGH_MAX_BODY_BYTES or {DEFAULT_MAX_BODY_BYTES})")
    serve.add_argument("--max-snapshot-bytes", type=int,
                       default=env("PASSTHROUGH_MAX_SNAPSHOT_BYTES", str(DEFAULT_MAX_SNAPSHOT_BYTES)),
                       help="snapshot upload limit (POST /v3/audiences/{id}/snapshot), before and after gzip "
                       f"decompression (default: $PASSTHROUGH_MAX_SNAPSHOT_BYTES or {DEFAULT_MAX_SNAPSHOT_BYTES})")
    serve.add_argument("--max-snapshot-uploads", type=_positive_int,
                       default=env("PASSTHROUGH_MAX_SNAPSHOT_UPLOADS", str(DEFAULT_MAX_SNAPSHOT_UPLOADS)),
                       help="snapshot uploads each server process takes at once; more are 503 (default: "
                       f"$PASSTHROUGH_MAX_SNAPSHOT_UPLOADS or {DEFAULT_MAX_SNAPSHOT_UPLOADS})")
    serve.add_argument("--cors-origins", default=env("PASSTHROUGH_CORS_ORIGINS", "*"), metavar="ORIGINS",
                       help="comma-separated origins whose web pages may call POST /v3/events and /v3/graphql, or * "
                       "for any (default: $PASSTHROUGH_CORS_ORIGINS or *); empty: none")
    serve.add_argument("--cors-private-origins", default=env("PASSTHROUGH_CORS_PRIVATE_ORIGINS", ""),
                       metavar="ORIGINS", help="origins whose pages may call the routes that need a private key "
                       "(default: $PASSTHROUGH_CORS_PRIVATE_ORIGINS or none); a private key in a web page is public")
    serve.add_argument("--read-statement-timeout", type=float, metavar="SECONDS",
                       default=env("PASSTHROUGH_READ_STATEMENT_TIMEOUT", str(DEFAULT_READ_STATEMENT_TIMEOUT)),
                       help="longest statement of an API read (GraphQL, member listings, changes), then 503 "
                       f"statement_timeout / GraphQL TIMEOUT; 0: none (default: $PASSTHROUGH_READ_STATEMENT_TIMEOUT "
                       f"or {DEFAULT_READ_STATEMENT_TIMEOUT:g})")
    add_connection_options(serve, env)
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", parents=[common], help="apply pending migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("status", parents=[common], help="show migration status").set_defaults(func=cmd_status)
    sub.add_parser("enable", parents=[common], help="SELECT passthrough.enable()").set_defaults(func=cmd_enable)
    sub.add_parser("disable", parents=[common], help="SELECT passthrough.disable()").set_defaults(func=cmd_disable)
    from pyapp import etl_cli  # the ETL commands: load, import

    etl_cli.register(sub, common)
    from pyapp import settings_cli  # settings, settings set NAME VALUE

    settings_cli.register(sub, common)
    from pyapp import keys_cli  # keys create / list / revoke

    keys_cli.register(sub, common)
    from pyapp import changes_cli  # changes [--follow]

    changes_cli.register(sub, common)
    from pyapp import roles_cli  # roles create

    roles_cli.register(sub, common)
    from pyapp import upkeep_cli  # expire, prune

    upkeep_cli.register(sub, common)
    from pyapp import webhooks_cli  # webhooks create / list / pause / resume / delete

    webhooks_cli.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    installed: dict[int, Any] = {}
    if __name__ == "__main__" or argv is None:  # only touch signal handlers when we own the process
        for sig in (signal.SIGTERM, signal.SIGHUP):
            installed[sig] = signal.signal(sig, _raise_keyboard_interrupt)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        _info("interrupted")
        return 130
    except CommandError as exc:
        _info(f"error: {exc}")
        return 1
    except Exception as exc:  # database errors, migration failures, ...
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        _info(f"error: {_describe(exc)}")
        return 1
    finally:
        for sig, handler in installed.items():
            signal.signal(sig, handler)


def _describe(exc: BaseException) -> str:
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        psycopg = None  # type: ignore[assignment]
    if psycopg is not None and isinstance(exc, psycopg.Error):
        return _pg_message(exc)
    return f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    sys.exit(main())
