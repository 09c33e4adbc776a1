"""GET /v3/changes: the change feed (private keys).

``?after=<cursor>&limit=N`` answers the next changes after the cursor (from the start without one), in
feed order, and ``next``: the cursor to resume from (the last change's, or ``after`` when there is none
yet). Every rule (the cursor's form, the limit's range, which changes are readable) belongs to
``passthrough.changes`` (sql/076_change_feed.sql); this module only reads the query string.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from pyapp.web.auth import Scope, require_scope
from pyapp.web.database import connection
from pyapp.web.responses import ApiError, JSONResponse, iso_utc

DEFAULT_LIMIT = 1000
CHANGES_SQL = (
    "SELECT cursor, change, identifier_type, identifier, audience_id, audience, event_ts, received_at, source,"
    " batch_id FROM passthrough.changes(%s, %s)"
)


def change_json(row: tuple[Any, ...]) -> dict[str, Any]:
    """One row of ``passthrough.changes`` (the columns of CHANGES_SQL, in order) as the API shows it; webhook
    payloads (pyapp/webhooks.py) carry the same objects."""
    c, change, identifier_type, identifier, audience_id, audience, event_ts, received_at, source, batch_id = row[:10]
    return {
        "cursor": c,
        "change": change,
        "identifier_type": identifier_type,
        "identifier": identifier,
        "audience_id": audience_id,
        "audience": audience,
        "event_ts": iso_utc(event_ts),
        "received_at": iso_utc(received_at) if received_at is not None else None,
        "source": source,
        "batch_id": batch_id,
    }


async def get_changes(request: Request) -> JSONResponse:
    await require_scope(request, Scope.PRIVATE)
    after = request.query_params.get("after") or None
    limit_text = request.query_params.get("limit")
    try:
        limit = DEFAULT_LIMIT if limit_text in (None, "") else int(limit_text)
    except ValueError:
        raise ApiError(400, "invalid_argument", f"limit must be an integer, got {limit_text!r}", field="limit") from None
    async with connection(request) as conn:
        cursor = await conn.execute(CHANGES_SQL, (after, limit))
        rows = await cursor.fetchall()
    changes = [change_json(row) for row in rows]
    return JSONResponse({"changes": changes, "next": changes[-1]["cursor"] if changes else after})
