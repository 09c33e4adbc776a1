"""POST /v3/audiences/{audience_id}/snapshot: a full membership list replaces one audience's (private keys).

The HTTP twin of ``passthrough import`` (pyapp/cli/etl.py): the same file, the same options (as query parameters),
the same code. The body is an ODP-convention snapshot: a CSV, gzip or plain, with the header ``type, action,
audience_id, ts`` and exactly one identifier column; ``{audience_id}`` is the external audience id its rows name.
Every rule (what a valid row is, the snapshot time, the guards against an empty snapshot or one that disqualifies
too many members, which a dry run reports instead of raising) is ``passthrough.import_snapshot``'s, reached
through pyapp/ingest/snapshot.py, and its errors reach the client through pyapp/errors.py like every other's.

The body is spooled to a temporary file (in TMPDIR) as it arrives, at most ``max_snapshot_bytes``: nothing of it is
held in memory but a chunk or two, and a slow upload never holds a database transaction open (an open transaction
would hold the change feed back). Then, in a worker thread, pyapp/web/snapshot_body.py decodes it, and its rows are
COPYed into the staging table and imported in one transaction, committed (a dry run's rolled back) before the
answer is sent. Only ``max_snapshot_uploads`` uploads run at a time per server process (``UploadSlots``).
"""

from __future__ import annotations

import errno
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import IO, Any

import anyio.to_thread
import psycopg
from starlette.datastructures import QueryParams
from starlette.requests import Request

from pyapp.feed import iso_utc
from pyapp.ingest import snapshot
from pyapp.web.auth import Scope, require_scope
from pyapp.web.body import stream_at_most
from pyapp.web.config import ApiConfig
from pyapp.web.numbers import decimal_parameter
from pyapp.web.database import attempts, transaction_failed_harmlessly
from pyapp.web.responses import ApiError, JSONResponse
from pyapp.web.snapshot_body import BodyEncoding, body_encoding, staging_chunks

SNAPSHOT_SOURCE = "http-snapshot"  # passthrough.batches.source (passthrough import records "snapshot")
SPOOL_WRITE_BYTES = 1 << 20  # received chunks are written to the temporary file about this much at a time
BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


@dataclass(frozen=True)
class ImportOptions:
    """The query parameters: passthrough import's options. None is SQL's default, and SQL checks the ranges."""

    at: Decimal | None = None
    dry_run: bool = False
    diff_limit: int | None = None
    max_disqualify_share: Decimal | None = None
    force: bool = False


PARAMETERS = ("at", "dry_run", "diff_limit", "max_disqualify_share", "force")



class UploadSlots:
    """The snapshot uploads one process handles at once (``max_snapshot_uploads``): one more is answered 503
    ``snapshot_uploads_busy`` (with Retry-After) before its body is read. Each upload holds a spool file, a
    thread, a connection and, while it is parsed, a CPU; a flood of them must not starve the events. Only the
    event loop's thread takes and gives back slots, so a plain counter is enough."""

    def __init__(self, limit: int) -> None:
        self.limit, self.busy = limit, 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        if self.busy >= self.limit:
            raise ApiError(503, "snapshot_uploads_busy", "this server process is already handling as many "
                           f"snapshot uploads as it takes at once ({self.limit}, --max-snapshot-uploads); nothing "
                           "was read or stored, retry later")
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1


def _upload_slots(request: Request) -> UploadSlots:
    state = request.app.state
    slots = getattr(state, "snapshot_upload_slots", None)
    if slots is None:
        slots = state.snapshot_upload_slots = UploadSlots(state.config.max_snapshot_uploads)
    return slots


async def post_snapshot(request: Request) -> JSONResponse:
    await require_scope(request, Scope.PRIVATE)
    options = read_options(request.query_params)
    encoding = body_encoding(request.headers)
    config: ApiConfig = request.app.state.config
    audience_id = request.path_params["audience_id"]
    with _upload_slots(request).hold():
        return await _upload(request, config, encoding, audience_id, options)


async def _upload(request: Request, config: ApiConfig, encoding: BodyEncoding, audience_id: str,
                  options: ImportOptions) -> JSONResponse:
    try:
        with tempfile.TemporaryFile(prefix="passthrough-snapshot-") as spool:
            size = await _receive(request, spool, config.max_snapshot_bytes)
            await anyio.to_thread.run_sync(spool.flush)  # a full disk shows here at the latest
            if size == 0:
                raise ApiError(400, "empty_body", "the request body is empty; send the snapshot, a CSV with its header")
            result, diff = await _import(request.app.state.database_url, config, spool, encoding, audience_id, options)
    except OSError as exc:  # the spool's writes (or closing it, which writes what is buffered)
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise ApiError(507, "insufficient_storage", "the server has no room left to spool the snapshot "
                       "(its TMPDIR is full); nothing was stored, retry later") from None
    # _import has returned: the import is committed (a dry run rolled back).
    return JSONResponse(_answer(audience_id, result, diff))


# --------------------------------------------------------------------------- the request


def read_options(query: QueryParams) -> ImportOptions:
    """The query parameters as ImportOptions; 400 for an unknown, repeated or malformed one (a typo such as
    ``dryrun=true`` must not import for real)."""
    values: dict[str, str] = {}
    for name, value in query.multi_items():
        if name not in PARAMETERS:
            raise ApiError(400, "invalid_argument",
                           f"unknown query parameter {name!r}; expected {', '.join(PARAMETERS)}", field=name[:64])
        if name in values:
            raise ApiError(400, "invalid_argument", f"{name} is given more than once", field=name)
        values[name] = value
    options: dict[str, Any] = {}
    for name in ("dry_run", "force"):
        if name in values:
            flag = BOOLEANS.get(values[name].strip().lower())
            if flag is None:
                raise _invalid(name, f"must be true or false, got {values[name][:64]!r}")
            options[name] = flag
    for name, what in (("at", "a number of seconds since the Unix epoch"), ("max_disqualify_share", "a number")):
        if name in values:
            options[name] = decimal_parameter(name, values[name], what)
    if "diff_limit" in values:
        try:
            options["diff_limit"] = int(values["diff_limit"])
        except ValueError:
            raise _invalid("diff_limit", f"must be an integer, got {values['diff_limit'][:64]!r}") from None
        if not options.get("dry_run"):  # else it would be ignored, its range never checked
            raise _invalid("diff_limit", "only a dry run lists a diff; add dry_run=true")
    return ImportOptions(**options)


def _invalid(name: str, reason: str) -> ApiError:
    return ApiError(400, "invalid_argument", f"{name}: {reason}", field=name)



async def _receive(request: Request, spool: IO[bytes], max_bytes: int) -> int:
    """Write the body to ``spool`` as it arrives (413 past ``max_bytes``, before reading anything when
    Content-Length says so); returns its size."""
    pending: list[bytes] = []
    pending_size = size = 0
    async for chunk in stream_at_most(request, max_bytes):
        pending.append(chunk)
        pending_size += len(chunk)
        size += len(chunk)
        if pending_size >= SPOOL_WRITE_BYTES:
            await anyio.to_thread.run_sync(spool.write, b"".join(pending))
            pending, pending_size = [], 0
    if pending:
        await anyio.to_thread.run_sync(spool.write, b"".join(pending))
    return size


# --------------------------------------------------------------------------- decoding (in the worker thread)


# --------------------------------------------------------------------------- the import (each attempt in a worker thread)


async def _import(
    database_url: str, config: ApiConfig, spool: IO[bytes], encoding: BodyEncoding, audience_id: str,
    options: ImportOptions,
) -> tuple[snapshot.SnapshotResult, list[tuple] | None]:
    """Stage and import the spooled snapshot in one transaction (in a worker thread), running it again from the
    file after a deadlock or serialization failure (``database.attempts``); returns the result and, for a dry
    run, up to diff_limit rows of the diff. The file is decoded as its rows are COPYed (pyapp/web/snapshot_body.py):
    ``Content-Encoding: gzip``, then gzip when the content starts with the gzip magic bytes or ``Content-Type`` says
    ``application/gzip``; at most ``max_snapshot_bytes`` decompressed (413 beyond); a line longer than
    ``snapshot.MAX_LINE_CHARS`` is 413 ``line_too_long`` as soon as it is that long, and more lines than a
    snapshot of ``max_snapshot_bytes`` can have, blank ones included, 413 ``too_many_lines``: a gzip that
    inflates into one huge line, or into millions of newlines, costs a few KiB and little CPU."""
    def attempt_in_thread() -> tuple[snapshot.SnapshotResult, list[tuple] | None]:
        # staging_chunks reads the file's start (header, gzip framing) at once: never on the event loop
        chunks = staging_chunks(spool, encoding, config.max_snapshot_bytes)
        return _import_once(database_url, config, chunks, audience_id, options)

    async def attempt(_: int) -> tuple[snapshot.SnapshotResult, list[tuple] | None]:
        return await anyio.to_thread.run_sync(attempt_in_thread)

    return await attempts(attempt, transaction_failed_harmlessly)


def _import_once(
    database_url: str, config: ApiConfig, chunks: Iterator[bytes], audience_id: str, options: ImportOptions
) -> tuple[snapshot.SnapshotResult, list[tuple] | None]:
    """One attempt, on a connection of its own, not the pool's: an import fills session temporary tables (the
    staging table and the snapshot's work tables, as large as the snapshot) that closing the connection drops,
    where a pooled session would keep them."""
    conn = psycopg.connect(
        database_url,
        autocommit=False,
        application_name=config.application_name,
        connect_timeout=max(2, math.ceil(config.pool_timeout)),  # libpq's minimum is 2 s
    )
    try:
        try:
            result = snapshot.import_rows(
                conn, chunks, audience_id, at=options.at, max_disqualify_share=options.max_disqualify_share,
                force=options.force, dry_run=options.dry_run, source=SNAPSHOT_SOURCE,
            )
        except snapshot.SnapshotRefused as exc:
            # the database's own error, for pyapp/errors.py: PT020 400 listing the rows, PT024 400, PT022/PT023 422
            raise exc.__cause__ from None  # type: ignore[misc]
        if options.dry_run:
            diff = snapshot.snapshot_diff(conn, options.diff_limit)
            conn.rollback()
            return result, diff
        conn.commit()
        return result, None
    finally:
        conn.close()  # rolls back whatever was not committed; drops the session's temporary tables


# --------------------------------------------------------------------------- the answer


def _answer(audience_id: str, result: snapshot.SnapshotResult, diff: list[tuple] | None) -> dict:
    body: dict[str, Any] = {
        "audience_id": audience_id,
        "applied": result.applied,
        "snapshot_at": iso_utc(result.snapshot_at),
        "listed": result.listed,
        "to_qualify": result.to_qualify,
        "to_disqualify": result.to_disqualify,
        "unchanged": result.unchanged,
        "kept_newer": result.kept_newer,
        "members_before": result.members_before,
        "batch_id": result.batch_id,
        "changed": result.changed,
        # a dry run's guards (a real import raises the first instead: 422)
        "refused_by": list(result.refused_by),
        "refusal_reasons": list(result.refusal_reasons),
    }
    if diff is not None:
        body["diff"] = [_diff_item(*row) for row in diff]
        # the diff lists every change but the unchanged members: fewer rows than changes means it was cut
        body["diff_truncated"] = len(diff) < result.to_qualify + result.to_disqualify + result.kept_newer
    return body


def _diff_item(change: str, identifier_type: str, identifier: str, current_ts: datetime | None,
               snapshot_ts: datetime) -> dict[str, Any]:
    return {
        "change": change,
        "identifier_type": identifier_type,
        "identifier": identifier,
        "current_ts": iso_utc(current_ts) if current_ts is not None else None,
        "snapshot_ts": iso_utc(snapshot_ts),
    }
