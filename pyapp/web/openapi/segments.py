"""The segments: /v3/segments, one segment, its validation and its members."""

from __future__ import annotations

from typing import Any

from pyapp.web.openapi.parts import BODY_ERRORS, NUL_IN_ID, SEGMENT_ID, TIMESTAMP, error, ok, operation

MEMBERS_DESCRIPTION = """\
The members of one segment: now (the live membership, as reads and sizes count it), or at `at`. Each comes
with `ts`, the time of the input that made it a member (seconds since the Unix epoch), which a snapshot
import (`passthrough import`, `POST /v3/audiences/{audience_id}/snapshot`) reads back as the row's ts.
NDJSON by default; `Accept: text/csv` for CSV. Pages follow `after`, the cursor the previous page's
`X-Next-Cursor` (or `Link`) named; the order is by identifier type (in the order the types were added), then identifier (byte order).
`passthrough export` writes the same as import-ready files. SQL: `passthrough.audience_members`."""

MEMBERS_PARAMETERS = [
    {"name": "at", "in": "query", "required": False,
     "description": "Seconds since the Unix epoch: the members at that instant (default: now).",
     "schema": {"type": "number", "examples": [1735689600]}},
    {"name": "after", "in": "query", "required": False,
     "description": "The cursor of the previous page (`X-Next-Cursor`); none for the first page.",
     "schema": {"type": "string", "examples": ["fs_user_id:user-1"]}},
    {"name": "limit", "in": "query", "required": False,
     "description": "At most this many members, 1 to 100000 (default 10000).",
     "schema": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 10000}},
]


CHANGES_DESCRIPTION = """\
A segment's latest entries and exits, newest first in the order its memberships changed (the change feed's
order, backwards): `entered`, `exited` or `expired` (a ttl ran out, at `event_ts`). What is committed now; to follow
the changes without missing one, read the feed, `GET /v3/changes`. The console (`GET /console`) shows them. SQL:
`passthrough.audience_recent_changes`."""

PATHS: dict[str, Any] = {
    "/v3/segments/{segment_id}/members": {
        "get": operation(
            "getSegmentMembers",
            "Who is in a segment, now or at a past instant, a page at a time (an export).",
            description=MEMBERS_DESCRIPTION,
            scope="private",
            parameters=[SEGMENT_ID, *MEMBERS_PARAMETERS],
            responses={
                "200": {
                    "description": "One page of members, by identifier type and identifier. When another page "
                                   "follows, `Link: <...>; rel=\"next\"` and `X-Next-Cursor` name it.",
                    "content": {
                        "application/x-ndjson": {"schema": {"type": "string", "description": (
                            'One JSON object per line: {"identifier_type": "fs_user_id", "identifier": "user-1", '
                            '"ts": 1735689600}.')}},
                        "text/csv": {"schema": {"type": "string", "description": (
                            "A header `identifier_type,identifier,ts`, then one row per member.")}},
                    },
                },
                "400": error("`at`, `after` or `limit` is invalid, or the query names another parameter "
                              "(`invalid_argument`, `detail.field` names it)."),
                "404": error("No segment has this id."),
                "406": error("`Accept` names neither `application/x-ndjson` nor `text/csv`."),
                "410": error("`history_pruned`: `at` is before the history horizon (the retention pruned it)."),
            },
        )
    },
    "/v3/segments/{segment_id}/changes": {
        "get": operation(
            "getSegmentChanges",
            "A segment's latest entries and exits, newest first.",
            description=CHANGES_DESCRIPTION,
            scope="private",
            parameters=[SEGMENT_ID, {
                "name": "limit", "in": "query", "required": False,
                # passthrough.audience_recent_changes' range and default, stated here once
                "description": "At most this many changes, 1 to 1000 (default 50).",
                "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}}],
            responses={
                "200": ok("The latest changes, newest first.", "SegmentChanges"),
                "400": error("`limit` is not an integer from 1 to 1000, the query names another parameter "
                             "(`invalid_argument`, `detail.field` names it), or the id holds a character "
                             "PostgreSQL cannot store (NUL)."),
                "404": error("No segment has this id."),
            },
        )
    },
    "/v3/segments": {
        "get": operation(
            "listSegments",
            "The ids of every segment.",
            scope="private",
            responses={"200": ok("Every segment id, in name order.", "SegmentIds")},
        )
    },
    "/v3/segments/{segment_id}": {
        "get": operation(
            "getSegment",
            "One segment's definition.",
            scope="private",
            parameters=[SEGMENT_ID],
            responses={"200": ok("The segment.", "Segment"), "400": NUL_IN_ID, "404": error("No segment has this id.")},
        ),
        "post": operation(
            "createSegment",
            "Create a segment.",
            scope="private",
            parameters=[SEGMENT_ID],
            body="SegmentInput",
            responses={
                "200": ok("Created, at revision 1.", "Revision"),
                **BODY_ERRORS,
                "409": error(
                    "A segment with this id exists (`audience_exists`), or the external audience id is linked to "
                    "another segment (`audience_conflict`)."
                ),
            },
        ),
        "put": operation(
            "putSegment",
            "Create or update a segment.",
            description="The revision is 1 when created, grows by one when a field changes, and stays for a no-op.",
            scope="private",
            parameters=[SEGMENT_ID],
            body="SegmentInput",
            responses={
                "200": ok("Saved.", "Revision"),
                **BODY_ERRORS,
                "409": error("The external audience id is linked to another segment."),
            },
        ),
        "delete": operation(
            "deleteSegment",
            "Delete a segment.",
            description="Membership state is kept: a segment linked to the same external audience id later shows it again.",
            scope="private",
            parameters=[SEGMENT_ID],
            responses={"200": ok("Deleted.", "Deleted"), "400": NUL_IN_ID, "404": error("No segment has this id.")},
        ),
    },
    "/v3/segments/{segment_id}:validate": {
        "post": operation(
            "validateSegment",
            "Check a segment definition without saving it.",
            scope="private",
            parameters=[SEGMENT_ID],
            body="SegmentInput",
            responses={
                "200": ok("The definition could be saved.", "Validated"),
                **BODY_ERRORS,
                "409": error("The external audience id is linked to another segment."),
            },
        )
    },
}

SCHEMAS: dict[str, Any] = {
    "SegmentInput": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "definition": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "external": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["external_audience_id"],
                        "properties": {"external_audience_id": {"type": "string", "maxLength": 255}},
                    }
                },
            },
            "description": {"type": ["string", "null"], "maxLength": 4096},
            "metadata": {"type": "object", "description": "Free-form, at most 64 KiB. Default {}."},
            "ttl_seconds": {
                "type": ["integer", "null"],
                "minimum": 1,
                "description": "How long a qualify event keeps a member, in seconds; null: for ever. Absent: for ever "
                "on POST; on PUT, the segment keeps the ttl it has. "
                "A member whose newest qualify is older no longer counts (and shows in /v3/changes as expired).",
            },
            "revision": {"type": "integer", "readOnly": True, "description": "Ignored when sent."},
        },
    },
    "Segment": {
        "type": "object",
        "required": ["segment_id", "revision", "description", "metadata", "definition"],
        "properties": {
            "segment_id": {"type": "string"},
            "revision": {"type": "integer"},
            "description": {"type": ["string", "null"]},
            "metadata": {"type": "object"},
            "definition": {
                "type": "object",
                "properties": {
                    "external": {"type": "object", "properties": {"external_audience_id": {"type": "string"}}}
                },
            },
            "is_ready": {"type": "boolean"},
            "size": {"type": "integer", "description": "Members qualified now (exact)."},
            "ttl_seconds": {"type": ["integer", "null"], "description": "Membership time to live (null: none)."},
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
        },
    },
    "SegmentIds": {
        "type": "object",
        "required": ["segment_ids"],
        "properties": {"segment_ids": {"type": "array", "items": {"type": "string"}}},
    },
    "Revision": {"type": "object", "required": ["revision"], "properties": {"revision": {"type": "integer"}}},
    "Deleted": {
        "type": "object",
        "properties": {"segment_id": {"type": "string"}, "deleted": {"const": True}},
    },
    "Validated": {
        "type": "object",
        "properties": {"segment_id": {"type": "string"}, "valid": {"const": True}},
    },
    "SegmentChanges": {
        "type": "object",
        "required": ["changes"],
        "properties": {"changes": {"type": "array", "items": {
            "type": "object",
            "required": ["change", "identifier_type", "identifier", "event_ts"],
            "properties": {
                "change": {"type": "string", "enum": ["entered", "exited", "expired"]},
                "identifier_type": {"type": "string"},
                "identifier": {"type": "string"},
                "event_ts": {**TIMESTAMP, "description": "The deciding event's time (UTC, with a Z)."},
                "received_at": {**TIMESTAMP, "type": ["string", "null"], "description": "When its batch was received."},
                "source": {"type": ["string", "null"], "description": "Where its batch came from: http, sql, load, ..."},
                "batch_id": {"type": "integer"},
            },
        }}},
    },
}
