"""GET /v3/changes: the change feed (private keys).

``?after=<cursor>&limit=N`` answers the next changes after the cursor (from the start without one), in
feed order, and ``next``: the cursor to resume from (the last change's, or ``after`` when there is none
yet). Every rule (the cursor's form, the limit's range, which changes are readable) belongs to
``passthrough.changes`` (sql/functions/210_change_feed.sql); this module only reads the query string.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from pyapp.web.auth import Scope, require_scope
from pyapp.web.database import connection
from pyapp.feed import CHANGES_SQL, change_json
from pyapp.web.responses import ApiError, JSONResponse

async def get_changes(request: Request) -> JSONResponse:
    await require_scope(request, Scope.PRIVATE)
    after = request.query_params.get("after") or None
    limit_text = request.query_params.get("limit")
    try:
        limit = None if limit_text in (None, "") else int(limit_text)  # None: SQL's default
    except ValueError:
        raise ApiError(400, "invalid_argument", f"limit must be an integer, got {limit_text!r}", field="limit") from None
    async with connection(request) as conn:
        cursor = await conn.execute(CHANGES_SQL, (after, limit))
        rows = await cursor.fetchall()
    changes = [change_json(row) for row in rows]
    return JSONResponse({"changes": changes, "next": changes[-1]["cursor"] if changes else after})
