"""Exporting an audience's members as the snapshot files ``passthrough import`` reads back.

``passthrough.audience_member_lines`` (sql/functions/260_audience_members.sql) decides who is in and writes every row
already in the ODP snapshot convention (rows ``passthrough,qualify,<audience_id>,<ts>,<identifier>``, ts being
when the member qualified), in blocks of lines: libpq hands a COPY's output over a row at a time, and a row per
member would cost more in Python than everything else together. This module writes the header (``type, action,
audience_id, ts, <identifier type>``) and gzips the blocks as they come. A snapshot file has one identifier
column, so members of several identifier types give one file per type.
"""

from __future__ import annotations

import gzip
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# Members per call of audience_member_lines: it hands a page over whole, so pages overlap the database's work
# with compressing the page before
PAGE = 100_000
AUDIENCE_SQL = "SELECT external_audience_id, size FROM passthrough.get_audience(%s)"
# the types that may key a membership (a low-confidence one, vuid, never does)
TYPES_SQL = "SELECT name FROM passthrough.list_identifier_types() WHERE high_confidence ORDER BY created_at, name"
# A page is kept, and at p_at sorted, in memory rather than on disk (4MB being the default)
WORK_MEM_SQL = "SET LOCAL work_mem = '128MB'"
# (segment, format, at, after, limit, identifier type): blocks of lines, the last with the next page's cursor. at
# is seconds since the Unix epoch, exact (a Decimal): SQL turns it into an instant (PT010 naming at).
# the lines as UTF-8 bytes, whatever the connection's encoding: written out as they come, never decoded
LINES_SQL = ("COPY (SELECT members, convert_to(lines, 'UTF8'), next_after"
             " FROM passthrough.audience_member_lines(%s, %s, passthrough.instant_from_seconds(%s, 'at'), %s, %s, %s))"
             " TO STDOUT WITH (FORMAT binary)")
LINES_TYPES = ["int4", "bytea", "text"]


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


def export_audience(conn: Any, segment: str, at: Decimal | None, output: str | None,
                    on_rows: Callable[[int], None] = lambda n: None,
                    on_total: Callable[[int], None] = lambda n: None) -> list[ExportedFile]:
    """Write the members of ``segment`` (now, or at ``at``) as import-ready snapshot files; one per identifier
    type that has members. Reads in one REPEATABLE READ transaction: the files agree with each other.
    ``on_total`` hears the audience's size before the first file is written (now only: the size at a past
    instant would cost a pass of its own), ``on_rows`` each block written. psycopg only.

    Which identifier types have members shows only as they are read, and the files' names depend on how many
    there are (``output_paths``), so each type is written to a temporary file beside the output first."""
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    target = os.path.dirname(output or "") or "."
    os.makedirs(target, exist_ok=True)
    spool = tempfile.mkdtemp(prefix=".passthrough-export-", dir=target)
    try:
        conn.execute(WORK_MEM_SQL)
        audience_id, size = conn.execute(AUDIENCE_SQL, (segment,)).fetchone()
        if at is None:
            on_total(size)  # exact: the live members
        written: list[tuple[str, str, int]] = []  # (identifier type, spooled file, members)
        for (identifier_type,) in conn.execute(TYPES_SQL).fetchall():
            spooled = os.path.join(spool, identifier_type)
            count = _write_type(conn, spooled, segment, at, identifier_type, on_rows)
            if count:
                written.append((identifier_type, spooled, count))
        if not written:  # no member: one file, with the header alone
            spooled = os.path.join(spool, "fs_user_id")
            written.append(("fs_user_id", spooled, _write_type(conn, spooled, segment, at, "fs_user_id", on_rows)))
        paths = output_paths(audience_id, [identifier_type for identifier_type, _, _ in written], output)
        files = []
        for identifier_type, spooled, count in written:
            path = paths[identifier_type]
            if os.path.dirname(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
            os.replace(spooled, path)
            files.append(ExportedFile(path, identifier_type, count))
        return files
    finally:
        shutil.rmtree(spool, ignore_errors=True)
        conn.rollback()  # read only: nothing to keep


def _write_type(conn: Any, path: str, segment: str, at: Decimal | None, identifier_type: str,
                on_rows: Callable[[int], None]) -> int:
    with _GzipWriter(path) as out:
        out.write(f"type,action,audience_id,ts,{identifier_type}\n".encode())
        return _copy_type(conn, out, segment, at, identifier_type, on_rows)


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


def _copy_type(conn: Any, out: Any, segment: str, at: Decimal | None, identifier_type: str,
               on_rows: Callable[[int], None]) -> int:
    after, total = None, 0
    while True:
        following = None
        with conn.cursor().copy(LINES_SQL, (segment, "snapshot", at, after, PAGE, identifier_type)) as copy:
            copy.set_types(LINES_TYPES)
            for members, lines, next_after in copy.rows():
                out.write(lines)
                total += members
                on_rows(members)
                following = next_after or following
        if following is None:
            return total
        after = following
