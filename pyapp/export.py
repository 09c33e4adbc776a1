"""Exporting an audience's members as the snapshot files ``passthrough import`` reads back.

``passthrough.audience_members`` (sql/083_audience_members.sql) decides who is in; this module asks it through
``COPY ... TO STDOUT`` with every row already in the ODP snapshot convention (header ``type, action,
audience_id, ts, <identifier type>``, rows ``passthrough,qualify,<audience_id>,<ts>,<identifier>``, ts being
when the member qualified), and gzips the bytes as they come. A snapshot file has one identifier column, so
members of several identifier types give one file per type.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any


PAGE = 1_000_000  # passthrough.audience_members' largest page
BLOCK = 10_000  # rows written (and reported) at a time
AUDIENCE_SQL = "SELECT external_audience_id FROM passthrough.get_audience(%s)"
LAST_SQL = "SELECT max(m.cursor COLLATE \"C\") FROM passthrough.audience_members(%s, %s, %s, %s) m"
COUNTS_SQL = "SELECT identifier_type, members FROM passthrough.audience_member_counts(%s, %s)"
# COPY takes no server-side parameters: psycopg binds these on the client, as values
COPY_SQL = ("COPY (SELECT 'passthrough', 'qualify', %s::text, trim_scale(extract(epoch FROM m.event_ts)), "
            "m.identifier FROM passthrough.audience_members(%s, %s, %s, %s) m "
            "WHERE m.identifier_type = %s) TO STDOUT WITH (FORMAT csv)")


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
    type. Reads in one REPEATABLE READ transaction: the files agree with each other."""
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
    while True:
        cur = conn.cursor()
        rows: list = []
        with cur.copy(COPY_SQL, (audience_id, segment, at, after, PAGE, identifier_type)) as copy:
            for row in copy:  # one row at a time, as libpq hands them: written in blocks
                rows.append(bytes(row))
                if len(rows) == BLOCK:
                    out.write(b"".join(rows))
                    on_rows(len(rows))
                    rows = []
        out.write(b"".join(rows))
        on_rows(len(rows))
        total += cur.rowcount
        if cur.rowcount < PAGE:
            return total
        # more than a page of this type (rare): go on after the page's last member
        after = conn.execute(LAST_SQL, (segment, at, after, PAGE)).fetchone()[0]
