"""The staging client of bulk loads and snapshot imports: COPY text rows, the staging table, the SQL calls.

The SQL side (sql/functions/170_bulk_load.sql) owns every rule: ``passthrough.begin_load()`` gives the session a
staging table, rows are COPYed into it (``format_row`` writes one row's COPY text), and
``passthrough.load_staged()`` validates them with the rules every transport shares and applies them through the
one writer, event log included. ``route`` sends the rows of one identifier to one writer, so two writers never
touch the same (identifier, audience) pair and never wait for each other's row locks.

``load_rows(conn, payload)`` works with psycopg and pg8000 connections alike.
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pyapp.errors import sql_error_fields
from pyapp.pgvalues import held_text, text_holds, text_problems

COPY_COLUMNS = (
    "row_no", "type", "action", "identifier_type", "identifier", "audience_id", "ts", "idempotence_id",
    "identifier_count", "transport_problems", "identifiers",
)
COPY_SQL = f"COPY pg_temp.passthrough_load ({', '.join(COPY_COLUMNS)}) FROM STDIN"


@dataclass(frozen=True)
class LoadResult:
    load_id: int
    batch_id: int | None
    accepted: int
    ignored: int
    rejected: int
    changed: int


class LoadRefused(Exception):
    """passthrough.load_staged refused the staged rows (SQLSTATE PT020): nothing of them was stored."""

    def __init__(self, message: str, invalid: list[dict], hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.invalid = invalid  # [{"row": row_no, "message": ..., "problems": [...]}], at most 100
        self.hint = hint


def _is_pg8000(conn: Any) -> bool:
    return type(conn).__module__.startswith("pg8000")


def copy_rows(conn: Any, payload: bytes | Iterable[bytes]) -> None:
    """COPY ``payload`` (text-format rows of COPY_COLUMNS) into this session's staging table.

    ``payload`` is the rows, or an iterable of chunks of them (each any number of whole rows) that is
    read as the COPY goes: a stream is never held in memory. An exception raised by the iterable
    propagates (psycopg aborts the COPY first; a pg8000 connection is left unusable: close it)."""
    cur = conn.cursor()
    whole = isinstance(payload, (bytes, bytearray))
    if _is_pg8000(conn):
        cur.execute(COPY_SQL, stream=io.BytesIO(payload) if whole else payload)
    else:
        chunks = [payload] if whole else payload
        with cur.copy(COPY_SQL) as copy:
            for chunk in chunks:
                copy.write(chunk)


def stage(conn: Any, payload: bytes | Iterable[bytes]) -> Any:
    """Fill this session's staging table (passthrough.begin_load) with ``payload`` (see copy_rows); returns a cursor."""
    cur = conn.cursor()
    cur.execute("SELECT passthrough.begin_load()")
    cur.fetchall()
    copy_rows(conn, payload)
    return cur


def register_staged_audiences(conn: Any) -> int:
    """Register the staged rows' new audience ids (passthrough.register_staged_audiences) and commit.

    Parallel writers call it between ``stage`` and load_staged: without it, a writer whose batch names an
    audience id that another writer's open batch named first waits for that whole batch to commit. It
    commits the connection's transaction; the staged rows stay (the staging table is the session's).
    Returns how many ids were new."""
    cur = conn.cursor()
    cur.execute("SELECT passthrough.register_staged_audiences()")
    (registered,) = cur.fetchone()
    conn.commit()
    return int(registered)


def load_rows(
    conn: Any, payload: bytes, *, source: str = "load", rejects: bool = False, skip_other_types: bool = False,
    register_audiences: bool = False,
) -> LoadResult:
    """Stage ``payload`` and apply it with passthrough.load_staged, in the connection's transaction.

    The caller commits. Raises LoadRefused (PT020) when rows are invalid and ``rejects`` is false; other
    database errors propagate as the driver raised them. With ``register_audiences`` (what parallel
    writers do) the new audience ids are registered and committed first (register_staged_audiences), so
    the transaction the caller commits holds the load alone; the load is still all or nothing.
    """
    cur = stage(conn, payload)
    if register_audiences:
        register_staged_audiences(conn)
    try:
        cur.execute(
            "SELECT load_id, batch_id, accepted, ignored, rejected, changed"
            " FROM passthrough.load_staged(%s, %s, %s)",
            (source, rejects, skip_other_types),
        )
    except Exception as exc:
        sqlstate, message, detail, hint = sql_error_fields(exc)
        if sqlstate == "PT020":
            raise LoadRefused(message, json.loads(detail or "[]"), hint) from exc
        raise
    return LoadResult(*(int(v) if v is not None else None for v in cur.fetchone()))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- staging rows


@dataclass
class StagedRow:
    """One record as the staging table takes it. None is SQL NULL (missing)."""

    type: str | None = None
    action: str | None = None
    identifier_type: str | None = None
    identifier: str | None = None
    audience_id: str | None = None
    ts: str | None = None  # decimal text, seconds since the Unix epoch
    idempotence_id: str | None = None
    identifier_count: int | None = 1
    problems: list[str] = field(default_factory=list)  # what only the transport can see
    identifiers: str | None = None  # JSON text of every identifier, when the event named more than one


def _esc(value: str | None) -> str:
    if value is None:
        return "\\N"
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def _array_literal(items: list[str]) -> str:
    return "{" + ",".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in items) + "}"


_NULL = "\\N"


def format_row(row_no: int, row: StagedRow) -> str:
    """The COPY text line (with its newline) for one staging row. A value text cannot hold (a NUL, or bytes of
    the file that were not UTF-8) becomes a problem of the row instead, naming its field: else COPY would
    refuse the whole batch, naming no row."""
    line = _copy_line(row_no, row)
    if not text_holds(line):
        _set_unheld_values_aside(row)
        line = _copy_line(row_no, row)
    return line


# The staging row's text fields and the event fields they came from, for the messages.
_TEXT_FIELDS = (("type", "type"), ("action", "action"), ("identifier_type", "identifiers"),
                ("identifier", "identifiers.{key}"), ("audience_id", "data.audience_id"),
                ("idempotence_id", "data.idempotence_id"))


def _set_unheld_values_aside(row: StagedRow) -> None:
    """Names each value text cannot hold, and stages it as text that says what it was (pyapp/pgvalues.py,
    held_text): the row is refused (or set aside) with its values as sent, and SQL's other rules see them
    rather than a missing value."""
    key = held_text((row.identifier_type or "")[:64])
    for attribute, name in _TEXT_FIELDS:
        value = getattr(row, attribute)
        if value is not None and not text_holds(value):
            what = "a key " if attribute == "identifier_type" else ""
            row.problems += [f"{name.format(key=key)}: {what}{reason}" for reason in text_problems(value)]
            setattr(row, attribute, held_text(value))
    row.problems = [held_text(p) for p in row.problems]  # e.g. a key named in a message


def _copy_line(row_no: int, row: StagedRow) -> str:
    count = _NULL if row.identifier_count is None else row.identifier_count
    problems = _esc(_array_literal(row.problems)) if row.problems else _NULL
    return (
        f"{row_no}\t{_esc(row.type)}\t{_esc(row.action)}\t{_esc(row.identifier_type)}\t{_esc(row.identifier)}\t"
        f"{_esc(row.audience_id)}\t{_esc(row.ts)}\t{_esc(row.idempotence_id)}\t{count}\t{problems}\t"
        f"{_esc(row.identifiers)}\n"
    )


def route(identifier: str | None, writers: int) -> int:
    """The writer for an identifier: the same identifier always goes to the same writer."""
    if writers <= 1 or identifier is None:
        return 0
    return zlib.crc32(identifier.encode("utf-8", "surrogatepass")) % writers
