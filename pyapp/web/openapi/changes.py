"""GET /v3/changes: the change feed."""

from __future__ import annotations

from typing import Any

from pyapp.web.openapi.parts import TIMESTAMP, error, ok, operation, ref

CHANGES_DESCRIPTION = """\
Every change of membership state, `entered` or `exited`, in feed order. Resume from the `next` of the
previous answer (or the `cursor` of the last change you processed): you never miss a change and never see one
twice, even when the transactions that made them commit in another order than they started. A change
becomes readable once every transaction older than it has finished, so a transaction left open anywhere on
the server holds the feed back until it ends. `event_ts` is the deciding event's time, `received_at` when its
batch was received. Without `after` the feed starts from the beginning."""

CHANGES_PARAMETERS = [
    {
        "name": "after",
        "in": "query",
        "required": False,
        "description": "A cursor this endpoint returned (`next`, or a change's `cursor`); none for the start.",
        "schema": {"type": "string", "examples": ["7423-0-12-3"]},
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        # passthrough.changes' range and default (sql/functions/210_change_feed.sql), stated here once
        "description": "At most this many changes, 1 to 10000 (default 1000).",
        "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000},
    },
]


PATHS: dict[str, Any] = {
    "/v3/changes": {
        "get": operation(
            "getChanges",
            "The change feed: who entered and who left which audience, in order, from a cursor.",
            description=CHANGES_DESCRIPTION,
            scope="private",
            parameters=CHANGES_PARAMETERS,
            responses={
                "200": ok("The next changes after the cursor, and the cursor to resume from.", "Changes"),
                "400": error(
                    "`after` is not a cursor the feed handed out (`invalid_cursor`), or `limit` is not an integer "
                    "in its range (`invalid_argument`)."
                ),
                "410": error(
                    "`cursor_pruned`: changes after `after` were deleted by the retention (`prune_history`); "
                    "resuming from it would miss some. Rebuild from the current state, then follow from now."
                ),
            },
        )
    },
}

SCHEMAS: dict[str, Any] = {
    "Changes": {
        "type": "object",
        "required": ["changes", "next"],
        "properties": {
            "changes": {"type": "array", "items": ref("Change")},
            "next": {
                "type": ["string", "null"],
                "description": "The cursor to pass as `after` next time: the last change's, or `after` itself "
                "when there was none (null when neither).",
            },
        },
    },
    "Change": {
        "type": "object",
        "required": ["cursor", "change", "identifier_type", "identifier", "audience_id", "event_ts"],
        "properties": {
            "cursor": {"type": "string", "description": "Resume after this change with `after=<cursor>`."},
            "change": {"type": "string", "enum": ["entered", "exited", "expired"]},
            "identifier_type": {"type": "string"},
            "identifier": {"type": "string"},
            "audience_id": {"type": "string", "description": "The external audience id."},
            "audience": {"type": ["string", "null"], "description": "The segment name, null when none is defined."},
            "event_ts": {**TIMESTAMP, "description": "The deciding event's time (UTC, with a Z)."},
            "received_at": {**TIMESTAMP, "type": ["string", "null"], "description": "When its batch was received."},
            "source": {"type": ["string", "null"], "description": "Where its batch came from: http, sql, load, ..."},
            "batch_id": {"type": "integer"},
        },
    },
}
