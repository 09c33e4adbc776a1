"""Snapshot import: a full membership list for one audience replaces the previous one.

The ODP convention: one gzip CSV per audience named ``<audience_id>.csv.gz`` with the header
``type, action, audience_id, ts`` plus exactly one high-confidence identifier column. Every rule lives
in SQL (sql/functions/200_snapshot_import.sql: ``passthrough.import_snapshot``); this module reads the file, stages its
rows with COPY (the bulk loader's staging table) and calls the function, in one transaction.

``import_rows(conn, payload, audience_id, ...)`` works with psycopg and pg8000 connections alike; the
payload is the staged rows (``read_snapshot``) or a stream of them (``copy_text_chunks``: the HTTP endpoint,
pyapp/web/snapshots.py).

Both read the file's lines through ``snapshot_records``: a line longer than ``MAX_LINE_CHARS`` is refused
as soon as it is that long, never built whole (a small gzip can inflate into one line of gigabytes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import IO, Any

from pyapp.ingest.formats import InputError, csv_records, open_text
from pyapp.ingest.lines import LineTooLong, bounded_lines
from pyapp.errors import sql_error_fields
from pyapp.ingest.staging import StagedRow, format_row, stage

__all__ = [
    "MAX_LINE_CHARS", "SnapshotRefused", "SnapshotResult", "audience_id_from_path", "copy_text_chunks",
    "import_rows", "max_lines", "read_snapshot", "snapshot_diff", "snapshot_records",
]

# The longest line a snapshot may have. A valid row is at most about 1,100 characters (an identifier is at
# most 512, an audience or idempotence id 255), so this leaves room for long invalid rows to be reported
# as rows, and holds any line in a few hundred KiB.
MAX_LINE_CHARS = 64 * 1024
# No row is shorter than `t,qualify,a,,i` and its newline: a snapshot of N bytes has at most N / 15 lines.
MIN_ROW_BYTES = 15


def max_lines(max_bytes: int) -> int:
    """The most lines, blank ones included, that a snapshot of at most ``max_bytes`` bytes may have; no valid
    snapshot within ``max_bytes`` has more, and a body of blank lines is refused after this many."""
    return max_bytes // MIN_ROW_BYTES


@dataclass(frozen=True)
class SnapshotResult:
    snapshot_at: datetime
    listed: int
    to_qualify: int
    to_disqualify: int
    unchanged: int
    kept_newer: int
    members_before: int
    applied: bool
    batch_id: int | None
    changed: int
    # a dry run's report of the guards that would refuse the import (names as the errors' codes), and why;
    # an import raises the first instead, so it has none
    refused_by: tuple[str, ...] = ()
    refusal_reasons: tuple[str, ...] = ()


class SnapshotRefused(Exception):
    """import_snapshot refused the snapshot; nothing changed. ``sqlstate`` says why (PT020/PT022/PT023/PT024)."""

    def __init__(self, sqlstate: str, message: str, detail: str | None, hint: str | None) -> None:
        super().__init__(message)
        self.sqlstate, self.message, self.detail, self.hint = sqlstate, message, detail, hint

    @property
    def invalid(self) -> list[dict]:
        if self.sqlstate != "PT020" or not self.detail:
            return []
        return json.loads(self.detail)


def audience_id_from_path(path: str) -> str:
    """``exports/aud-1.csv.gz`` -> ``aud-1``."""
    name = os.path.basename(path)
    for suffix in (".csv.gz", ".csv", ".gz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_snapshot(path: str, on_read: Callable[[int], None] = lambda n: None,
                  first_row: int = 0) -> tuple[bytes, int, int]:
    """The staging payload of an ODP-convention snapshot file (CSV, plain or gzip), its row count, and its last
    line number. Rows are numbered by their line in the file, plus ``first_row`` (files staged together)."""
    display = "<stdin>" if path == "-" else path
    lines, last = [], 0
    text = open_text(path, on_read)
    try:
        for line, row in snapshot_records(text, display):
            lines.append(format_row(first_row + line, row))
            last = line
    except LineTooLong as exc:
        raise InputError(f"{display}: line {exc.line} is longer than {MAX_LINE_CHARS} characters, the most a "
                         "snapshot line may have; is it a snapshot CSV?") from None
    finally:
        if path != "-":
            text.close()
    return "".join(lines).encode("utf-8", "surrogatepass"), len(lines), last


def snapshot_records(text: IO[str], name: str, max_lines: int | None = None) -> Iterator[tuple[int, StagedRow]]:
    """(line, row) for each record of a snapshot CSV, its lines bounded (pyapp/ingest/lines.py): a line longer
    than MAX_LINE_CHARS raises LineTooLong, more than ``max_lines`` lines TooManyLines, a header it refuses
    InputError."""
    return csv_records(bounded_lines(text, MAX_LINE_CHARS, max_lines), name)


def copy_text_chunks(records: Iterable[tuple[int, StagedRow]], chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
    """The staging payload of (line, row) records (``snapshot_records``) in chunks of about ``chunk_bytes``,
    produced as the records are read: ``import_rows`` COPYs a stream without holding it in memory."""
    lines: list[str] = []
    size = 0
    for line, row in records:
        text = format_row(line, row)
        lines.append(text)
        size += len(text)
        if size >= chunk_bytes:
            yield "".join(lines).encode("utf-8", "surrogatepass")
            lines, size = [], 0
    if lines:
        yield "".join(lines).encode("utf-8", "surrogatepass")


def import_rows(
    conn: Any,
    payload: bytes | Iterable[bytes],
    audience_id: str,
    *,
    at: Decimal | None = None,
    max_disqualify_share: float | Decimal | None = None,
    force: bool = False,
    dry_run: bool = False,
    source: str = "snapshot",
) -> SnapshotResult:
    """Stage ``payload`` (bytes, or chunks as ``copy_text_chunks`` gives them) and call passthrough.import_snapshot
    in the connection's transaction. ``max_disqualify_share`` None is SQL's default; SQL checks its range.

    The caller commits (or rolls back a dry run). Raises SnapshotRefused for PT020/PT022/PT023/PT024; a dry run
    reports the guards (PT022/PT023) in ``refused_by`` instead of raising them.
    """
    cur = stage(conn, payload)
    try:
        cur.execute(
            "SELECT snapshot_at, listed, to_qualify, to_disqualify, unchanged, kept_newer, members_before,"
            " applied, batch_id, changed, refused_by, refusal_reasons"
            " FROM passthrough.import_snapshot(%s, %s::numeric, %s::numeric, %s, %s, %s)",
            (audience_id, None if at is None else str(at),
             None if max_disqualify_share is None else str(max_disqualify_share), force, dry_run, source),
        )
    except Exception as exc:
        sqlstate, message, detail, hint = sql_error_fields(exc)
        if sqlstate in ("PT020", "PT022", "PT023", "PT024"):
            raise SnapshotRefused(sqlstate, message, detail, hint) from exc
        raise
    at_, *counts, applied, batch_id, changed, refused_by, reasons = cur.fetchone()
    return SnapshotResult(at_, *(int(c) for c in counts), applied, batch_id, int(changed),
                          tuple(refused_by), tuple(reasons))


def snapshot_diff(conn: Any, limit: int | None = None) -> list[tuple]:
    """(change, identifier_type, identifier, current_ts, snapshot_ts) of the last import or dry run, at most
    ``limit`` (None: SQL's default; SQL checks the range, PT010 naming diff_limit)."""
    cur = conn.cursor()
    cur.execute("SELECT change, identifier_type, identifier, current_ts, snapshot_ts"
                " FROM passthrough.snapshot_diff(%s::integer)", (limit,))
    return [tuple(r) for r in cur.fetchall()]
