"""POST /v3/events: ODP events in, 202 once the batch is committed.

The body is one event object or a JSON array of them. The HTTP layer only enforces transport
limits (content type, size, number of events); every rule about the events themselves is applied
by ``passthrough.apply_events``, which refuses the whole batch (PT001, listing every invalid event)
or stores all of it. Events of another type (the Optimizely SDKs send
``{"type": "fullstack", "action": "identified"}``) are acknowledged, not stored, and counted as ignored.
"""

from __future__ import annotations

import psycopg
from psycopg import AsyncConnection
from starlette.requests import Request

from pyapp import errors
from pyapp.web.auth import Scope, checked_key, key_refused
from pyapp.web.body import JsonBody, read_json_body
from pyapp.web.config import ApiConfig
from pyapp.web.database import run_statement
from pyapp.web.metrics import ServiceMetrics
from pyapp.web.responses import ApiError, JSONResponse, accepted_response

EVENT_SOURCE = "http"  # passthrough.batches.source
# the key is checked (again) inside the statement, which passes its scope on: one round trip (auth.py)
APPLY_SQL = ("SELECT accepted, ignored, changed FROM passthrough.apply_events(%s::jsonb, %s, true,"
             " passthrough._require_api_key(%s, 'public'))")


async def post_events(request: Request) -> JSONResponse:
    key = await checked_key(request, Scope.PUBLIC)  # SQL decides what a public key may send (PT036)
    config: ApiConfig = request.app.state.config
    metrics: ServiceMetrics = request.app.state.metrics
    body = await read_json_body(request, max_bytes=config.max_body_bytes)
    try:
        events_json = _events_array_text(body, config.max_events)
    except ApiError:
        metrics.events_refused(_event_count(body))
        raise

    # One statement in autocommit mode: apply_events stores the whole batch or nothing, so it needs no
    # BEGIN/COMMIT around it; run_statement returns once it is committed (a failure at commit is an error
    # of the statement) and retries deadlocks and serialization failures a bounded number of times.
    async def apply(conn: AsyncConnection) -> tuple[int, int, int]:
        cursor = await conn.execute(APPLY_SQL, (events_json, EVENT_SOURCE, key.hash))
        return await cursor.fetchone()

    try:
        accepted, ignored, changed = await run_statement(request, apply)
    except psycopg.Error as exc:
        # a key revoked since this worker last saw it is forgotten, and the answer; any other 4xx refused the events
        if not key_refused(request, key.hash, exc) and 400 <= errors.http_status(exc.sqlstate or "") < 500:
            metrics.events_refused(_event_count(body))
        raise
    # run_statement has returned without an error: the batch is committed.
    metrics.batch_applied(accepted, ignored, changed)
    return accepted_response(accepted=accepted, ignored=ignored, changed=changed)


def _event_count(body: JsonBody) -> int:
    """How many events the body holds: an array's items, one for a lone object (anything else holds none)."""
    if isinstance(body.value, list):
        return len(body.value)
    return 1 if isinstance(body.value, dict) else 0


def _events_array_text(body: JsonBody, max_events: int) -> str:
    """The body as the JSON array text apply_events takes; a lone object becomes a batch of one."""
    if isinstance(body.value, dict):
        return f"[{body.text}]"
    if isinstance(body.value, list) and len(body.value) > max_events:
        raise ApiError(
            413,
            "too_many_events",
            f"a request may carry at most {max_events} events, this one has {len(body.value)}; "
            "split it into several requests",
        )
    return body.text  # anything else is refused by apply_events, with its reason
