"""What every ``passthrough`` subcommand shares: where its database is, running one statement there, and how
messages, tables and errors are printed.

Every subcommand finds its database the same way (``open_database``):

1. ``--database-url URL``, else
2. ``$PASSTHROUGH_DATABASE_URL``, else
3. the embedded PostgreSQL 18 under ``--data-dir`` / ``$PASSTHROUGH_DATA_DIR`` /
   ``./.passthrough`` (started for the duration of the command, stopped
   cleanly afterwards unless another process is still using it).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyapp.db import connect

DATABASE_URL_ENV = "PASSTHROUGH_DATABASE_URL"


class CommandError(Exception):
    """An expected failure: printed as ``error: ...`` and exit status 1."""


@dataclass
class Database:
    url: str
    source: str  # human-readable: where the URL came from
    psql: str = "psql"  # psql executable to suggest

    @property
    def psql_command(self) -> str:
        return f"{shell_quote(self.psql)} {shell_quote(self.url, prefer_double=True)}"


@contextmanager
def open_database(args: argparse.Namespace) -> Iterator[Database]:
    """Resolve the database for any subcommand (the one place that decides)."""
    url = args.database_url or os.environ.get(DATABASE_URL_ENV)
    if url:
        origin = "--database-url" if args.database_url else f"${DATABASE_URL_ENV}"
        yield Database(url=url, source=f"{redact(url)} (from {origin})")
        return

    from pyapp.embedded import PG_MAJOR, EmbeddedPostgres

    pg = EmbeddedPostgres(args.data_dir)
    info(f"embedded PostgreSQL {PG_MAJOR}: {pg.pgdata} (starting it unless already running)")
    try:
        pg.start()
    except Exception as exc:
        raise CommandError(f"could not start the embedded PostgreSQL in {pg.pgdata}: {exc}") from exc
    try:
        assert pg.url is not None
        yield Database(url=pg.url, source=f"embedded PostgreSQL {PG_MAJOR} ({pg.pgdata})", psql=str(pg.psql_path))
    finally:
        with signals_deferred():  # a second Ctrl-C must not leave the server half-stopped
            stopped = pg.stop()
        info("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL left running for other processes")


def run_sql(args: argparse.Namespace, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """One statement in one transaction on the command's database; its rows. For the small commands
    (enable, disable, keys, webhooks) whose callers pass a literal statement and parameters."""
    import psycopg

    from pyapp.errors import describe

    with open_database(args) as db:
        info(f"database: {db.source}")
        try:
            with connect(db.url) as conn:  # commits on clean exit
                return conn.execute(sql, params).fetchall()
        except (psycopg.errors.UndefinedFunction, psycopg.errors.InvalidSchemaName) as exc:
            raise CommandError(f"{describe(exc)}\nhint: run `passthrough migrate` first") from exc


def print_rows(rows: Sequence[dict[str, Any]], *, empty: str) -> None:
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


def redact(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return url
    return url.replace(f":{password}@", ":***@", 1) if password else url


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def shell_quote(text: str, *, prefer_double: bool = False) -> str:
    if prefer_double and not any(ch in text for ch in '"$`\\!'):
        return f'"{text}"'
    return shlex.quote(text)


@contextmanager
def signals_deferred() -> Iterator[None]:
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
