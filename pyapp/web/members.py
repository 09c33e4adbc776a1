"""GET /v3/segments/{segment_id}/members: who is in a segment, now or at ``?at=``, a page at a time.

``passthrough.audience_members`` (sql/083_audience_members.sql) owns the rules: the segment, the cursor's
form, the instant, the history horizon. This module reads the query string, reads the cursor of the page's
last member and whether another follows it, and has the database write the page (COPY) as NDJSON (the
default) or CSV, by ``Accept``. The next page is named in a ``Link`` header (``rel="next"``) and in
``X-Next-Cursor``. A page is read whole before it is sent (the headers come first), hence its own maximum.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from pyapp import epoch, export
from pyapp.web.auth import Scope, authorized_connection
from pyapp.web.responses import ApiError

DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000
PARAMETERS = ("at", "after", "limit")
NDJSON = "application/x-ndjson"
CSV = "text/csv"
# the limit-th member's cursor, and whether one follows it: at most two rows
NEXT_SQL = f"SELECT m.cursor FROM {export.MEMBERS} OFFSET %s"
CSV_HEADER = b"identifier_type,identifier,ts\n"
# each page is written by the database, in blocks of lines (pyapp/export.py says why)
COPY_SQL = {
    NDJSON: export.blocked_copy(
        f"json_build_object('identifier_type', m.identifier_type, 'identifier', m.identifier, 'ts', {export.TS_SQL})"
        "::text || E'\\n'", export.MEMBERS),
    CSV: export.blocked_copy(
        f"{export.csv_field_sql('m.identifier_type')} || ',' || {export.csv_field_sql('m.identifier')} || ',' || "
        f"{export.TS_SQL} || E'\\n'", export.MEMBERS),
}


async def get_members(request: Request) -> Response:
    media_type = _media_type(request.headers.get("accept"))
    at, after, limit = _query(request)
    page = (request.path_params["segment_id"], at, after, limit)
    body = [CSV_HEADER] if media_type == CSV else []
    async with authorized_connection(request, Scope.PRIVATE) as (conn, _):
        async with conn.transaction():  # one snapshot for the page and its next cursor
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cursor = await conn.execute(NEXT_SQL, (*page[:3], limit + 1, limit - 1))
            following = [c for (c,) in await cursor.fetchall()]
            async with conn.cursor().copy(COPY_SQL[media_type], page) as copy:
                copy.set_types(["int8", "text"])
                async for _, block in copy.rows():
                    body.append(block.encode())
    headers = {}
    if len(following) == 2:
        query = urlencode({**dict(request.query_params), "after": following[0]})
        headers = {"link": f'<{request.url.path}?{query}>; rel="next"', "x-next-cursor": following[0]}
    return Response(b"".join(body), media_type=media_type, headers=headers)


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
