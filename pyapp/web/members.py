"""GET /v3/segments/{segment_id}/members: who is in a segment, now or at ``?at=``, a page at a time.

``passthrough.audience_member_lines`` (sql/functions/260_audience_members.sql) owns the rules: the segment, the cursor's
form, the instant, the history horizon, the lines of each format. This module reads the query string and has
the database write the page (one COPY) as NDJSON (the default) or CSV, by ``Accept``, with the cursor of its
last member when another follows. The next page is named in a ``Link`` header (``rel="next"``) and in
``X-Next-Cursor``. A page is read whole before it is sent (the headers come first), hence its own maximum.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from pyapp.ingest.export import LINES_SQL, LINES_TYPES, WORK_MEM_SQL
from pyapp.web.auth import Scope, authorized_read
from pyapp.web.numbers import decimal_parameter
from pyapp.web.responses import ApiError

DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000
PARAMETERS = ("at", "after", "limit")
NDJSON = "application/x-ndjson"
CSV = "text/csv"
CSV_HEADER = b"identifier_type,identifier,ts\n"
FORMATS = {NDJSON: "ndjson", CSV: "csv"}  # passthrough.audience_member_lines' names for them


async def get_members(request: Request) -> Response:
    media_type = _media_type(request.headers.get("accept"))
    at, after, limit = _query(request)
    body, following = [CSV_HEADER] if media_type == CSV else [], None
    async with authorized_read(request, Scope.PRIVATE) as (conn, _), conn.transaction():
        await conn.execute(WORK_MEM_SQL)
        params = (request.path_params["segment_id"], FORMATS[media_type], at, after, limit, None)
        async with conn.cursor().copy(LINES_SQL, params) as copy:
            copy.set_types(LINES_TYPES)
            async for _, lines, next_after in copy.rows():
                body.append(lines)
                following = next_after or following
    headers = {}
    if following is not None:
        query = urlencode({**dict(request.query_params), "after": following})
        headers = {"link": f'<{request.url.path}?{query}>; rel="next"', "x-next-cursor": following}
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
    at = None  # seconds, exact: SQL turns them into an instant (LINES_SQL)
    if params.get("at"):
        at = decimal_parameter("at", params["at"], "seconds since the Unix epoch")
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
