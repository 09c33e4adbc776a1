"""GET /v3/segments/{segment_id}/changes: a segment's latest entries and exits, newest first (private keys).

``?limit=N`` (1 to 1000, default 50). The console (GET /console) shows them. A look, not a feed: no cursor to
resume from (GET /v3/changes is the feed). ``passthrough.audience_recent_changes``
(sql/functions/215_audience_recent_changes.sql) owns the rules, the limit's range and default included; this
module reads the query string and shapes the rows as the feed does.
"""

from __future__ import annotations

from starlette.requests import Request

from pyapp.feed import iso_utc
from pyapp.web.auth import Scope, require_scope
from pyapp.web.database import connection
from pyapp.web.responses import ApiError, JSONResponse

RECENT_CHANGES_SQL = (
    "SELECT change, identifier_type, identifier, event_ts, received_at, source, batch_id"
    " FROM passthrough.audience_recent_changes(%s, %s::integer)"
)
PARAMETERS = ("limit",)


async def get_segment_changes(request: Request) -> JSONResponse:
    await require_scope(request, Scope.PRIVATE)
    unknown = sorted(set(request.query_params) - set(PARAMETERS))
    if unknown:
        raise ApiError(400, "invalid_argument", f"{unknown[0]}: unknown parameter; the parameter is limit",
                       field=unknown[0])
    limit_text = request.query_params.get("limit")
    try:
        limit = None if limit_text in (None, "") else int(limit_text)  # None: SQL's default
    except ValueError:
        raise ApiError(400, "invalid_argument", f"limit must be an integer, got {limit_text[:64]!r}",
                       field="limit") from None
    async with connection(request) as conn:
        cursor = await conn.execute(RECENT_CHANGES_SQL, (request.path_params["segment_id"], limit))
        rows = await cursor.fetchall()
    return JSONResponse({"changes": [
        {"change": change, "identifier_type": identifier_type, "identifier": identifier,
         "event_ts": iso_utc(event_ts), "received_at": iso_utc(received_at) if received_at is not None else None,
         "source": source, "batch_id": batch_id}
        for change, identifier_type, identifier, event_ts, received_at, source, batch_id in rows]})
