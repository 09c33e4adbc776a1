"""GET /v3/segments/{segment_id}/members: who is in a segment, now or at ``?at=``, a page at a time.

``passthrough.audience_members`` (sql/083_audience_members.sql) owns the rules: the segment, the cursor's
form, the instant, the history horizon. This module reads the query string, asks for one row more than the
page to know whether another follows, and writes the rows as NDJSON (the default) or CSV, by ``Accept``.
The next page is named in a ``Link`` header (``rel="next"``) and in ``X-Next-Cursor``. A page is read whole
before it is sent (the headers come first), hence its own maximum.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import StreamingResponse

from pyapp import epoch
from pyapp.web.auth import Scope, authorized_connection
from pyapp.web.responses import ApiError

DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000
PARAMETERS = ("at", "after", "limit")
NDJSON = "application/x-ndjson"
CSV = "text/csv"
CSV_HEADER = ("identifier_type", "identifier", "ts")
ROWS_PER_CHUNK = 5_000
MEMBERS_SQL = "SELECT identifier_type, identifier, event_ts, cursor FROM passthrough.audience_members(%s, %s, %s, %s)"


async def get_members(request: Request) -> StreamingResponse:
    media_type = _media_type(request.headers.get("accept"))
    at, after, limit = _query(request)
    async with authorized_connection(request, Scope.PRIVATE) as (conn, _):
        cursor = await conn.execute(MEMBERS_SQL, (request.path_params["segment_id"], at, after, limit + 1))
        rows = await cursor.fetchall()
    headers = {}
    if len(rows) > limit:
        rows = rows[:limit]
        following = rows[-1][3]
        query = urlencode({**dict(request.query_params), "after": following})
        headers = {"link": f'<{request.url.path}?{query}>; rel="next"', "x-next-cursor": following}
    body = _csv_chunks(rows) if media_type == CSV else _ndjson_chunks(rows)
    return StreamingResponse(body, media_type=media_type, headers=headers)


def _media_type(accept: str | None) -> str:
    offered = [part.split(";", 1)[0].strip().lower() for part in (accept or "").split(",") if part.strip()]
    if not offered:
        return NDJSON
    for media_type in offered:
        if media_type in (NDJSON, CSV):
            return media_type
        if media_type in ("*/*", "application/*", "application/json"):
            return NDJSON
        if media_type == "text/*":
            return CSV
    raise ApiError(406, "not_acceptable", f"members are sent as {NDJSON} or {CSV}; Accept named neither",
                   field="accept")


def _query(request: Request) -> tuple[Any, str | None, int]:
    params = request.query_params
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise _invalid(unknown[0], f"unknown parameter; the parameters are {', '.join(PARAMETERS)}")
    at = None
    if params.get("at"):
        try:
            at = epoch.from_seconds(Decimal(params["at"].strip()))
        except (ArithmeticError, ValueError):  # decimal.InvalidOperation and Overflow are ArithmeticErrors
            raise _invalid("at", f"must be seconds since the Unix epoch, got {params['at'][:64]!r}") from None
    limit = DEFAULT_LIMIT
    if params.get("limit"):
        try:
            limit = int(params["limit"])
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            raise _invalid("limit", f"must be an integer from 1 to {MAX_LIMIT}, got {params['limit'][:64]!r}")
    return at, params.get("after") or None, limit


def _invalid(name: str, reason: str) -> ApiError:
    return ApiError(400, "invalid_argument", f"{name}: {reason}", field=name)


def _ndjson_chunks(rows: list[tuple]) -> Iterator[bytes]:
    dumps = orjson.dumps
    for start in range(0, len(rows), ROWS_PER_CHUNK):
        yield b"".join(
            b'{"identifier_type":%s,"identifier":%s,"ts":%s}\n'
            % (dumps(t), dumps(i), epoch.seconds_text(ts).encode())
            for t, i, ts, _ in rows[start:start + ROWS_PER_CHUNK])


def _csv_chunks(rows: list[tuple]) -> Iterator[bytes]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for start in range(0, len(rows), ROWS_PER_CHUNK):
        writer.writerows((t, i, epoch.seconds_text(ts)) for t, i, ts, _ in rows[start:start + ROWS_PER_CHUNK])
        yield out.getvalue().encode()
        out.seek(0)
        out.truncate()
    if not rows:
        yield out.getvalue().encode()
