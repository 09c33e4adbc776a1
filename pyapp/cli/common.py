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
from decimal import Decimal, InvalidOperation
from typing import Any

from pyapp.db import connect
from pyapp.pgvalues import numeric_holds

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
def open_database(args: argparse.Namespace, *, create: bool = False) -> Iterator[Database]:
    """Resolve the database for any subcommand (the one place that decides). Only ``create`` (serve, migrate)
    may initialise an embedded cluster: another command run in the wrong directory would otherwise build a
    second, empty database that the running server never sees."""
    url = args.database_url or os.environ.get(DATABASE_URL_ENV)
    if url:
        origin = "--database-url" if args.database_url else f"${DATABASE_URL_ENV}"
        yield Database(url=url, source=f"{redact(url)} (from {origin})")
        return

    from pyapp.embedded import PG_MAJOR, EmbeddedPostgres

    pg = EmbeddedPostgres(args.data_dir)
    if not create and not (pg.pgdata / "PG_VERSION").is_file():
        raise CommandError(f"no database here (looked in {pg.data_dir})\nhint: run this where `passthrough serve` "
                           "runs, or give --data-dir DIR, $PASSTHROUGH_DATA_DIR or --database-url URL")
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


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """Every list command's ``--json`` (print_rows)."""
    parser.add_argument("--json", action="store_true", help="print a JSON array of objects instead of a table")


def print_rows(rows: Sequence[dict[str, Any]], *, empty: str, as_json: bool = False,
               free_text: Sequence[str] | None = None) -> None:
    """Every list command's output: with ``as_json`` a JSON array of the rows; else a plain aligned table,
    fitted to the terminal when stdout is one, whole when piped (format_table); ``empty`` when there are none."""
    if as_json:
        import json

        print(json.dumps(list(rows), default=_json_value, ensure_ascii=False, indent=2), flush=True)
        return
    if not rows:
        print(empty, flush=True)
        return
    import shutil

    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    print(format_table(rows, width, free_text), flush=True)


TABLE_GAP = "  "
MIN_SQUEEZED = 10  # a squeezed column keeps at least this many characters (or its header, if wider)


def format_table(rows: Sequence[dict[str, Any]], width: int | None, free_text: Sequence[str] | None = None) -> str:
    """The table rule, the same for every list command:

    - every column is shown, in order, under its header; the first column (what identifies the row) is never
      shortened, nor are the others but the ``free_text`` ones (default: all but the first), such as a URL, an
      error or a description: a time or a count cut short would mislead;
    - ``width`` None (piped): nothing is shortened, columns are aligned with two spaces;
    - when the table is wider than ``width``, the widest free-text column is shortened (ending in …), one
      character at a time, down to MIN_SQUEEZED characters;
    - when even that does not fit, each row is printed as a block of ``column  value`` lines (as psql's
      expanded display), values but the first shortened to the width.
    """
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    if width is not None:
        squeezable = set(columns[1:] if free_text is None else free_text) - {columns[0]}
        floor = [min(w, max(len(c), MIN_SQUEEZED)) if c in squeezable else w for c, w in zip(columns, widths)]
        while _table_width(widths) > width:
            shrinkable = [i for i in range(1, len(widths)) if widths[i] > floor[i]]
            if not shrinkable:
                return _expanded(columns, cells, width)
            widest = max(shrinkable, key=lambda i: widths[i])
            widths[widest] -= 1
    lines = [_line(columns, widths), _line(["-" * w for w in widths], widths)]
    lines.extend(_line(row, widths) for row in cells)
    return "\n".join(lines)


def _table_width(widths: list[int]) -> int:
    return sum(widths) + len(TABLE_GAP) * (len(widths) - 1)


def _line(values: Sequence[str], widths: list[int]) -> str:
    return TABLE_GAP.join(_fit(v, w).ljust(w) for v, w in zip(values, widths)).rstrip()


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _expanded(columns: list[str], cells: list[list[str]], width: int) -> str:
    label = max(len(c) for c in columns)
    blocks = []
    for number, row in enumerate(cells, 1):
        title = f"-[ {number} ]"
        lines = [title + "-" * max(width - len(title), 0)]
        room = max(width - label - len(TABLE_GAP), 1)
        lines.extend(f"{c.ljust(label)}{TABLE_GAP}{v if i == 0 else _fit(v, room)}".rstrip()  # the first: whole
                     for i, (c, v) in enumerate(zip(columns, row)))
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def _cell(value: Any) -> str:
    from datetime import datetime

    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return " ".join(str(value).split())  # one line per row: newlines and tabs as spaces


def _json_value(value: Any) -> Any:
    from datetime import date, datetime, timedelta
    from decimal import Decimal

    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):  # a number when a float says it exactly (e.g. a ts in microseconds), else text
        if value == value.to_integral_value():
            return int(value)
        return float(value) if Decimal(repr(float(value))) == value else str(value)
    return str(value)


def redact(url: str) -> str:
    """``url`` with its password hidden, whether in ``user:pw@`` or in the query string (``?password=``)."""
    import re
    from urllib.parse import urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        url = url.replace(f":{password}@", ":***@", 1)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 batch``, ``2 batches``: the count (with thousands separators) and the noun that agrees with it."""
    if count == 1:
        return f"{count:,} {singular}"
    suffix = "es" if singular.endswith(("s", "sh", "ch", "x")) else "s"
    return f"{count:,} {plural_form or singular + suffix}"


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (checked while parsing, before any database starts)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def exact_decimal(option: str, text: str | None, what: str) -> Decimal | None:
    """An option's value as the exact decimal it was written as (None when not given). Its range is SQL's to check
    (PT010); a value that is no number, or none PostgreSQL's numeric holds (pyapp/pgvalues.py), is a CommandError
    naming the option, not the database's bare overflow."""
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise CommandError(f"{option}: not {what}: {text!r}") from None
    if not numeric_holds(value):
        raise CommandError(f"{option}: not {what} that PostgreSQL's numeric holds: {text[:64]!r}")
    return value


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
