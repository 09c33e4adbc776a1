"""Exporting an audience's members as the snapshot files ``passthrough import`` reads back.

``passthrough.audience_members`` (sql/083_audience_members.sql) decides who is in; this module has the database
write every row already in the ODP snapshot convention (header ``type, action, audience_id, ts, <identifier
type>``, rows ``passthrough,qualify,<audience_id>,<ts>,<identifier>``, ts being when the member qualified) and
gzips the bytes as they come. A snapshot file has one identifier column, so members of several identifier types
give one file per type.

The database sends the lines in blocks of BLOCK (``blocked_copy``): libpq hands a COPY's output over a row at a
time, and a row per member would cost more in Python than everything else together.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

PAGE = 1_000_000  # passthrough.audience_members' largest page
BLOCK = 10_000  # lines per row of a blocked COPY
# WITH ORDINALITY numbers the rows in the function's order (blocked_copy groups them by it)
MEMBERS = ("passthrough.audience_members(%s, %s, %s, %s) WITH ORDINALITY "
           "AS m(identifier_type, identifier, event_ts, cursor, n)")
AUDIENCE_SQL = "SELECT external_audience_id FROM passthrough.get_audience(%s)"
COUNTS_SQL = "SELECT identifier_type, members FROM passthrough.audience_member_counts(%s, %s)"
LAST_SQL = f"SELECT max(m.cursor COLLATE \"C\") FROM {MEMBERS}"
TS_SQL = "trim_scale(extract(epoch FROM m.event_ts))"


def csv_field_sql(expression: str) -> str:
    """SQL for ``expression`` (text) as one CSV field: quoted, quotes doubled, when it holds a quote, a comma, a
    carriage return or a newline (RFC 4180, as Python's csv module and COPY's CSV format write it)."""
    return (f"CASE WHEN strpos({expression}, '\"') + strpos({expression}, ',') + strpos({expression}, E'\\r') "
            f"+ strpos({expression}, E'\\n') > 0 THEN '\"' || replace({expression}, '\"', '\"\"') || '\"' "
            f"ELSE {expression} END")


def blocked_copy(lines_sql: str, source: str, paged: bool = False) -> str:
    """A COPY that sends the text of ``lines_sql`` (one line, newline included, per row of ``source``) in the
    order of ``source``, BLOCK lines to a row with their number, in binary format (no escaping): read it with
    ``set_types(BLOCK_TYPES)`` and ``rows()``. ``paged``: ``source`` reads one row more than the page, whose
    size follows as three more parameters; that row is left out of the lines and counted in the fourth column,
    and the block holding the page's last row names its cursor (the third), so one statement tells where
    the next page starts, if one does."""
    page = "" if not paged else " FILTER (WHERE x.n <= %s)"
    cursor, beyond = (("NULL::text", "0::bigint") if not paged else
                      ("max(x.cursor) FILTER (WHERE x.n = %s)", "count(*) FILTER (WHERE x.n > %s)"))
    return (f"COPY (SELECT count(*){page}, coalesce(string_agg(x.line, '' ORDER BY x.n){page}, ''), {cursor}, "
            f"{beyond} FROM (SELECT m.n, m.cursor, {lines_sql} AS line FROM {source}) x "
            f"GROUP BY (x.n - 1) / {BLOCK} ORDER BY (x.n - 1) / {BLOCK}) TO STDOUT WITH (FORMAT binary)")


BLOCK_TYPES = ["int8", "text", "text", "int8"]


# each line a snapshot row of one identifier type; the first parameter is the row's start, up to its ts
COPY_SQL = blocked_copy(f"%s || {TS_SQL} || ',' || {csv_field_sql('m.identifier')} || E'\\n'",
                        f"{MEMBERS} WHERE m.identifier_type = %s")


def _csv_line(fields: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(fields)
    return out.getvalue()


@dataclass(frozen=True)
class ExportedFile:
    path: str
    identifier_type: str
    members: int


def output_paths(audience_id: str, identifier_types: list[str], output: str | None) -> dict[str, str]:
    """Where each identifier type's file goes: ``output`` (default ``<audience_id>.csv.gz``) for one type; for
    several, the same name in a directory per type beside it (``fs_user_id/<name>``), so that every file
    keeps the name ``passthrough import`` reads the audience id from."""
    path = output or f"{audience_id}.csv.gz"
    if len(identifier_types) <= 1:
        return {t: path for t in identifier_types}
    head, tail = os.path.split(path)
    return {t: os.path.join(head, t, tail) for t in identifier_types}


def member_counts(conn: Any, segment: str, at: datetime | None) -> dict[str, int]:
    """{identifier type: members} of the segment: the files an export writes, and their sizes."""
    return dict(conn.execute(COUNTS_SQL, (segment, at)).fetchall())


def export_audience(conn: Any, segment: str, at: datetime | None, output: str | None,
                    on_rows: Callable[[int], None] = lambda n: None) -> list[ExportedFile]:
    """Write the members of ``segment`` (now, or at ``at``) as import-ready snapshot files; one per identifier
    type. Reads in one REPEATABLE READ transaction: the files agree with each other. psycopg only."""
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    try:
        (audience_id,) = conn.execute(AUDIENCE_SQL, (segment,)).fetchone()
        counts = member_counts(conn, segment, at)
        written = []
        for identifier_type, path in output_paths(audience_id, list(counts) or ["fs_user_id"], output).items():
            if os.path.dirname(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
            with gzip.open(path, "wb", compresslevel=1) as out:
                out.write(f"type,action,audience_id,ts,{identifier_type}\n".encode())
                count = _copy_type(conn, out, segment, at, audience_id, identifier_type, on_rows)
            written.append(ExportedFile(path, identifier_type, count))
        return written
    finally:
        conn.rollback()  # read only: nothing to keep


def _copy_type(conn: Any, out: Any, segment: str, at: datetime | None, audience_id: str, identifier_type: str,
               on_rows: Callable[[int], None]) -> int:
    # pages of the members from the type's first one on: the type's members are consecutive, so a page holding
    # fewer than PAGE of them holds its last one
    after, total = f"{identifier_type}:", 0
    start = _csv_line(["passthrough", "qualify", audience_id, ""]).rstrip("\n")
    while True:
        written = 0
        with conn.cursor().copy(COPY_SQL, (start, segment, at, after, PAGE, identifier_type)) as copy:
            copy.set_types(BLOCK_TYPES)
            for rows, block, _, _ in copy.rows():
                out.write(block.encode())
                written += rows
                on_rows(rows)
        total += written
        if written < PAGE:
            return total
        # as many lines as a page (rare): maybe more of this type after the page's last member
        after = conn.execute(LAST_SQL, (segment, at, after, PAGE)).fetchone()[0]
