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
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

PAGE = 999_999  # and one more: passthrough.audience_members' largest page
BLOCK = 10_000  # lines per row of a blocked COPY
# WITH ORDINALITY numbers the rows in the function's order (blocked_copy groups them by it)
MEMBERS = ("passthrough.audience_members(%s, %s, %s, %s) WITH ORDINALITY "
           "AS m(identifier_type, identifier, event_ts, cursor, n)")
AUDIENCE_SQL = "SELECT external_audience_id FROM passthrough.get_audience(%s)"
COUNTS_SQL = "SELECT identifier_type, members FROM passthrough.audience_member_counts(%s, %s)"
TS_SQL = "trim_scale(extract(epoch FROM m.event_ts))"
# A page of up to a million members is sorted into blocks in memory, not on disk (4MB being the default)
WORK_MEM_SQL = "SET LOCAL work_mem = '128MB'"


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


# each line a snapshot row of one identifier type; the first parameter is the row's start, up to its ts; a page
# (PAGE members, and one more to know whether another follows) after the parameters of blocked_copy
COPY_SQL = blocked_copy(f"%s || {TS_SQL} || ',' || {csv_field_sql('m.identifier')} || E'\\n'",
                        f"{MEMBERS} WHERE m.identifier_type = %s", paged=True)


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
                    on_rows: Callable[[int], None] = lambda n: None,
                    on_total: Callable[[int], None] = lambda n: None) -> list[ExportedFile]:
    """Write the members of ``segment`` (now, or at ``at``) as import-ready snapshot files; one per identifier
    type. Reads in one REPEATABLE READ transaction: the files agree with each other. ``on_total`` hears how
    many members the files will hold before the first is written, ``on_rows`` each block written. psycopg only."""
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    try:
        conn.execute(WORK_MEM_SQL)
        (audience_id,) = conn.execute(AUDIENCE_SQL, (segment,)).fetchone()
        counts = member_counts(conn, segment, at)
        on_total(sum(counts.values()))
        written = []
        for identifier_type, path in output_paths(audience_id, list(counts) or ["fs_user_id"], output).items():
            if os.path.dirname(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
            with _GzipWriter(path) as out:
                out.write(f"type,action,audience_id,ts,{identifier_type}\n".encode())
                count = _copy_type(conn, out, segment, at, audience_id, identifier_type, on_rows)
            written.append(ExportedFile(path, identifier_type, count))
        return written
    finally:
        conn.rollback()  # read only: nothing to keep


class _GzipWriter:
    """A gzip file written by a thread of its own, so that compressing one block overlaps reading the next
    (zlib lets go of the GIL while it compresses). Level 1: the file is for moving, not for keeping."""

    def __init__(self, path: str) -> None:
        self._file = gzip.open(path, "wb", compresslevel=1)
        self._blocks: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="export-gzip", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (block := self._blocks.get()) is not None:
            if self._failed is None:
                try:
                    self._file.write(block)
                except BaseException as exc:  # re-raised in the reading thread
                    self._failed = exc

    def write(self, block: bytes) -> None:
        if self._failed is not None:
            raise self._failed
        self._blocks.put(block)

    def __enter__(self) -> _GzipWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._blocks.put(None)
        self._thread.join()
        self._file.close()
        if self._failed is not None and exc_info[0] is None:
            raise self._failed


def _copy_type(conn: Any, out: Any, segment: str, at: datetime | None, audience_id: str, identifier_type: str,
               on_rows: Callable[[int], None]) -> int:
    # pages of the members from the type's first one on; each page says whether more of the type follow
    after, total = f"{identifier_type}:", 0
    start = _csv_line(["passthrough", "qualify", audience_id, ""]).rstrip("\n")
    while True:
        following, beyond = None, 0
        params = (PAGE, PAGE, PAGE, PAGE, start, segment, at, after, PAGE + 1, identifier_type)
        with conn.cursor().copy(COPY_SQL, params) as copy:
            copy.set_types(BLOCK_TYPES)
            for rows, block, cursor, more in copy.rows():
                out.write(block.encode())
                total += rows
                on_rows(rows)
                following, beyond = cursor or following, beyond + more
        if not beyond:
            return total
        after = following
