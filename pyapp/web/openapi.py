"""GET /openapi.json: the OpenAPI 3.1 description of the HTTP API, maintained by hand.

tests/test_http_openapi.py keeps it true: every route of the app appears here with its methods,
every status a test receives is documented for its operation, and the scope each operation
declares (``x-required-scope``, or ``security: []`` for public ones) is the one it enforces.
When you add an endpoint, describe it here.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from pyapp import __version__
from pyapp.web.auth import API_KEY_HEADER
from pyapp.ingest.snapshot import MAX_LINE_CHARS, MIN_ROW_BYTES
from pyapp.web.config import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_EVENTS, DEFAULT_MAX_SNAPSHOT_BYTES
from pyapp.web.config import DEFAULT_MAX_SNAPSHOT_UPLOADS
from pyapp.web.snapshots import DEFAULT_DIFF_LIMIT, MAX_DIFF_LIMIT, SNAPSHOT_SOURCE

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref(schema)}}}


def _error(description: str, schema: str = "Error") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref(schema)}}}


def _operation(
    operation_id: str,
    summary: str,
    *,
    scope: str | None,
    responses: dict[str, Any],
    body: str | None = None,
    request_body: dict[str, Any] | None = None,
    description: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
    error_schema: str = "Error",
) -> dict[str, Any]:
    """One operation. ``scope`` None is public; "public"/"private" adds the key's 401 (and 403 for a
    private operation, unless ``responses`` describes its own) and the database's 503, answered with
    ``error_schema``. ``body`` names a JSON schema; ``request_body`` is any other requestBody object."""
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref(body)}}}
    if request_body:
        op["requestBody"] = request_body
    if scope is None:
        op["security"] = []
        op["responses"] = responses
        return op
    op["security"] = [{"ApiKey": []}]
    op["x-required-scope"] = scope
    secured = {"401": _error(f"No `{API_KEY_HEADER}` header, or the key is unknown or revoked.", error_schema)}
    if scope == "private":
        secured["403"] = _error("The key is public and this operation needs a private key.", error_schema)
    unavailable = _error(
        "The database is unavailable or busy (transient): retry later. Nothing was stored.", error_schema
    )
    op["responses"] = {**responses, **{k: v for k, v in secured.items() if k not in responses}}
    op["responses"].setdefault("503", unavailable)
    return op


SEGMENT_ID = {
    "name": "segment_id",
    "in": "path",
    "required": True,
    "description": "The segment (audience) name: 1 to 255 characters from a-z, 0-9 and _.",
    "schema": {"type": "string"},
}

NUL_IN_ID = _error("The id holds a character PostgreSQL cannot store (NUL).")

BODY_ERRORS = {
    "400": _error(
        "The body is not a JSON object of the documented shape, a field is invalid (`detail.field` names it), "
        "or the segment id is outside [a-z0-9_]+. Also: wrong Content-Type, malformed JSON or gzip."
    ),
    "413": _error("The body is larger than the limit (before or after gzip decompression)."),
}

EVENTS_DESCRIPTION = f"""\
Applies a batch of ODP events as one all-or-nothing transaction and answers 202 once it is committed.
The body is one event object or a JSON array of at most {DEFAULT_MAX_EVENTS} (by default); it may be sent with
`Content-Encoding: gzip`, and may be at most {DEFAULT_MAX_BODY_BYTES} bytes (by default) before and after
decompression. Events whose `type` is not `passthrough` (such as the `fullstack`/`identified` events the
Optimizely SDKs send) are acknowledged and not stored, and counted in `ignored`; a public key may send those,
but passthrough events only while the setting `public_passthrough_events` is on. A batch with any invalid
passthrough event is refused with 400, listing every invalid event in `detail.invalids`; nothing of it is stored."""

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
        "description": "At most this many changes, 1 to 10000 (default 1000).",
        "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000},
    },
]

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

SNAPSHOT_DESCRIPTION = f"""\
Replaces the membership of one audience with a full list of its members at time T: the HTTP twin of
`passthrough import`. `audience_id` is the external audience id (the one events carry in `data.audience_id`).
The body is the ODP snapshot file: a CSV, gzip or plain, whose header names `type, action, audience_id, ts`
and exactly one identifier column (e.g. `fs_user_id`), one row per member
(`passthrough,qualify,<audience_id>,<ts or empty>,<identifier>`). Send it with `Content-Type: application/gzip`
(gzip), `text/csv` or `application/octet-stream` (gzip when it starts with the gzip magic bytes, else plain);
`Content-Encoding: gzip` is accepted too. At most {DEFAULT_MAX_SNAPSHOT_BYTES} bytes (by default,
`--max-snapshot-bytes`) as sent and again decompressed; the upload is spooled to a temporary file, not held in
memory. A line may have at most {MAX_LINE_CHARS} characters, and a snapshot at most one line per
{MIN_ROW_BYTES} bytes of that limit, blank lines included. Each server process takes at most
{DEFAULT_MAX_SNAPSHOT_UPLOADS} uploads at once (by default, `--max-snapshot-uploads`); one more is 503.

Listed identifiers are qualified (with their row's `ts`, else T); members not listed whose deciding event is
older than T are disqualified as of T; events at or after T stand. T is `at`, else the newest `ts` in the
file. It is one transaction, logged as one batch (source `{SNAPSHOT_SOURCE}`): readers see the old membership or
the new one, and 200 comes only after the commit. A snapshot with an invalid row is refused whole (400,
`detail.invalids` lists up to 100 rows by their line in the CSV, the header being line 1); an empty snapshot
(a header and no rows), or one that would disqualify more than `max_disqualify_share` of the members, is
refused with 422 unless `force=true`. With `dry_run=true` nothing is applied (the guards still apply) and the
answer lists the changes it would make, up to `diff_limit`."""


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


SNAPSHOT_PARAMETERS = [
    {
        "name": "audience_id",
        "in": "path",
        "required": True,
        "description": "The external audience id: every row's `audience_id` must be this. Percent-encoded, as any path "
        "parameter: an id holding `/` is sent with `%2F`.",
        "schema": {"type": "string", "maxLength": 255, "examples": ["crm-vip"]},
    },
    _query("at", "The snapshot time T in seconds since the Unix epoch (`--at`); default: the newest `ts` in "
           "the file, else now.", {"type": "number", "examples": [1735689600]}),
    _query("dry_run", "Compute the changes and answer them in `diff`; apply nothing (`--dry-run`).",
           {"type": "boolean", "default": False}),
    _query("diff_limit", f"At most this many changes in a dry run's `diff` (`--diff-limit`), 0 to {MAX_DIFF_LIMIT}.",
           {"type": "integer", "minimum": 0, "maximum": MAX_DIFF_LIMIT, "default": DEFAULT_DIFF_LIMIT}),
    _query("max_disqualify_share", "Refuse (422) a snapshot that would disqualify more than this share of the "
           "current members (`--max-disqualify-share`), 0 to 1.",
           {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5}),
    _query("force", "Apply an empty snapshot, or one over `max_disqualify_share`, anyway (`--force`).",
           {"type": "boolean", "default": False}),
]

SNAPSHOT_BODY = {
    "required": True,
    "description": "The snapshot CSV (header `type,action,audience_id,ts,<identifier type>`), gzip or plain.",
    "content": {
        media_type: {"schema": {"type": "string", "contentMediaType": media_type}}
        for media_type in ("application/gzip", "text/csv", "application/octet-stream")
    },
}

PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {
        "get": _operation(
            "healthz", "The process is up.", scope=None, responses={"200": _ok("The process is up.", "Health")}
        )
    },
    "/readyz": {
        "get": _operation(
            "readyz",
            "The database is reachable and migrated.",
            scope=None,
            responses={
                "200": _ok("Ready to serve.", "Ready"),
                "503": _error("The database is unreachable or busy (`database_unavailable`), lacks migrations "
                              "(`not_migrated`), or cannot run Passthrough's PL/pgSQL functions (`not_ready`)."),
            },
        )
    },
    "/openapi.json": {
        "get": _operation(
            "openapi", "This document.", scope=None, responses={"200": {"description": "The OpenAPI document.",
                                                                        "content": {JSON: {"schema": {"type": "object"}}}}}
        )
    },
    "/v3/events": {
        "post": _operation(
            "postEvents",
            "Send ODP events (passthrough qualify/disqualify).",
            description=EVENTS_DESCRIPTION,
            scope="public",
            body="EventsBody",
            responses={
                "202": _ok("The batch is committed.", "Accepted"),
                "400": _error(
                    "Invalid events (`detail.invalids` lists every one; nothing was stored), or a malformed body: "
                    "wrong Content-Type or Content-Encoding, malformed JSON or gzip, empty body."
                ),
                "403": _error("Passthrough is disabled (`passthrough_disabled`: an operator enables it with "
                              "`passthrough enable`), or a public key sent passthrough events "
                              "(`public_key_passthrough_events`: send them with a private key, or allow public keys "
                              "with `passthrough settings set public_passthrough_events on`). Nothing was stored."),
                "413": _error(
                    f"More events than the limit ({DEFAULT_MAX_EVENTS} by default), or a body over the size limit."
                ),
            },
        )
    },
    "/v3/audiences/{audience_id}/snapshot": {
        "post": _operation(
            "importSnapshot",
            "Replace one audience's membership with a full list of its members (an ODP snapshot file).",
            description=SNAPSHOT_DESCRIPTION,
            scope="private",
            parameters=SNAPSHOT_PARAMETERS,
            request_body=SNAPSHOT_BODY,
            responses={
                "200": _ok("Imported and committed, or (`dry_run`) what the import would do.", "SnapshotResult"),
                "400": _error(
                    "Nothing was changed. Invalid rows (`invalid_rows`: `detail.invalids` lists them by line), a "
                    "header without exactly one identifier column besides type, action, audience_id and ts "
                    "(`invalid_csv_header`), a body that is not UTF-8 CSV (`malformed_csv`) or not the gzip it "
                    "claims to be (`malformed_gzip`), an empty body, a wrong Content-Type or Content-Encoding, or "
                    "a query parameter that is unknown or invalid (`invalid_argument`, `detail.field` names it)."
                ),
                "403": _error(
                    "The key is public and this operation needs a private key (`insufficient_scope`), or "
                    "passthrough is disabled (`passthrough_disabled`; a dry run works regardless)."
                ),
                "413": _error(
                    "Nothing was changed. The body is larger than the limit, as sent or decompressed "
                    f"(`body_too_large`); a line is longer than {MAX_LINE_CHARS} characters (`line_too_long`, "
                    "refused as soon as it is; the message names the line); or there are more lines, blank ones "
                    "included, than a "
                    f"snapshot within the limit can have, one per {MIN_ROW_BYTES} bytes (`too_many_lines`)."
                ),
                "503": _error(
                    "Nothing was changed; retry after `Retry-After` seconds. This server process is already "
                    "handling as many snapshot uploads as it takes at once (`snapshot_uploads_busy`, "
                    f"`--max-snapshot-uploads`, {DEFAULT_MAX_SNAPSHOT_UPLOADS} by default; answered before the body "
                    "is read), or the database is unavailable or busy (transient)."
                ),
                "507": _error("`insufficient_storage`: the server's TMPDIR is full, so the upload could not be "
                              "spooled. Nothing was changed; retry later."),
                "422": _error(
                    "Refused by a guard, nothing changed: the snapshot is empty (`empty_snapshot`) or would "
                    "disqualify more than `max_disqualify_share` of the members (`snapshot_disqualifies_too_many`). "
                    "Check the export; `force=true` applies it anyway."
                ),
            },
        )
    },
    "/v3/changes": {
        "get": _operation(
            "getChanges",
            "The change feed: who entered and who left which audience, in order, from a cursor.",
            description=CHANGES_DESCRIPTION,
            scope="private",
            parameters=CHANGES_PARAMETERS,
            responses={
                "200": _ok("The next changes after the cursor, and the cursor to resume from.", "Changes"),
                "400": _error(
                    "`after` is not a cursor the feed handed out (`invalid_cursor`), or `limit` is not an integer "
                    "from 1 to 10000 (`invalid_argument`)."
                ),
                "410": _error(
                    "`cursor_pruned`: changes after `after` were deleted by the retention (`prune_history`); "
                    "resuming from it would miss some. Rebuild from the current state, then follow from now."
                ),
            },
        )
    },
    "/v3/segments/{segment_id}/members": {
        "get": _operation(
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
                "400": _error("`at`, `after` or `limit` is invalid, or the query names another parameter "
                              "(`invalid_argument`, `detail.field` names it)."),
                "404": _error("No segment has this id."),
                "406": _error("`Accept` names neither `application/x-ndjson` nor `text/csv`."),
                "410": _error("`history_pruned`: `at` is before the history horizon (the retention pruned it)."),
            },
        )
    },
    "/v3/segments": {
        "get": _operation(
            "listSegments",
            "The ids of every segment.",
            scope="private",
            responses={"200": _ok("Every segment id, in name order.", "SegmentIds")},
        )
    },
    "/v3/segments/{segment_id}": {
        "get": _operation(
            "getSegment",
            "One segment's definition.",
            scope="private",
            parameters=[SEGMENT_ID],
            responses={"200": _ok("The segment.", "Segment"), "400": NUL_IN_ID, "404": _error("No segment has this id.")},
        ),
        "post": _operation(
            "createSegment",
            "Create a segment.",
            scope="private",
            parameters=[SEGMENT_ID],
            body="SegmentInput",
            responses={
                "200": _ok("Created, at revision 1.", "Revision"),
                **BODY_ERRORS,
                "409": _error(
                    "A segment with this id exists (`audience_exists`), or the external audience id is linked to "
                    "another segment (`audience_conflict`)."
                ),
            },
        ),
        "put": _operation(
            "putSegment",
            "Create or update a segment.",
            description="The revision is 1 when created, grows by one when a field changes, and stays for a no-op.",
            scope="private",
            parameters=[SEGMENT_ID],
            body="SegmentInput",
            responses={
                "200": _ok("Saved.", "Revision"),
                **BODY_ERRORS,
                "409": _error("The external audience id is linked to another segment."),
            },
        ),
        "delete": _operation(
            "deleteSegment",
            "Delete a segment.",
            description="Membership state is kept: a segment linked to the same external audience id later shows it again.",
            scope="private",
            parameters=[SEGMENT_ID],
            responses={"200": _ok("Deleted.", "Deleted"), "400": NUL_IN_ID, "404": _error("No segment has this id.")},
        ),
    },
    "/v3/segments/{segment_id}:validate": {
        "post": _operation(
            "validateSegment",
            "Check a segment definition without saving it.",
            scope="private",
            parameters=[SEGMENT_ID],
            body="SegmentInput",
            responses={
                "200": _ok("The definition could be saved.", "Validated"),
                **BODY_ERRORS,
                "409": _error("The external audience id is linked to another segment."),
            },
        )
    },
    "/v3/graphql/assets/{version}/{name}": {
        "get": _operation(
            "graphiqlAsset",
            "A file of the GraphiQL page (React, GraphiQL and its stylesheet), shipped with the server.",
            description="The versions and licences: pyapp/web/graphql/static/graphiql/ASSETS.md. Gzipped when the "
            "client accepts it; cacheable for ever (the version is in the path).",
            scope=None,
            parameters=[
                {"name": "version", "in": "path", "required": True, "schema": {"type": "string"},
                 "description": "The package and version, e.g. `graphiql-3.8.3`."},
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
                 "description": "The file, e.g. `graphiql.min.js`."},
            ],
            responses={
                "200": {"description": "The file.", "content": {
                    "text/javascript": {"schema": {"type": "string"}}, "text/css": {"schema": {"type": "string"}}}},
                "404": _error("No such file."),
            },
        ),
    },
    "/v3/graphql": {
        "get": _operation(
            "graphiql",
            "GraphiQL, an in-browser IDE for the GraphQL facade (paste a key into its headers).",
            scope=None,
            responses={
                "200": {"description": "The GraphiQL page.", "content": {"text/html": {"schema": {"type": "string"}}}}
            },
        ),
        "post": _operation(
            "graphql",
            "ODP's GraphQL membership query: "
            "customer(fs_user_id: ...) { audiences(subset: [...]) { edges { node { name state } } } }.",
            description="See pyapp/web/graphql/ for the schema. GraphQL errors (an invalid identifier, a "
            "validation error) are answered 200 with `errors`, as ODP does; each error has `message`, `locations` "
            "and `extensions.classification` and `extensions.code`.",
            scope="public",
            body="GraphQLRequest",
            error_schema="GraphQLErrors",
            responses={
                "200": _ok("The result: `data`, and `errors` if any.", "GraphQLResponse"),
                "400": _error("Not a GraphQL request: wrong Content-Type, malformed JSON, no `query`.", "GraphQLErrors"),
                "413": _error("The body is larger than the limit.", "GraphQLErrors"),
            },
        ),
    },
}

TIMESTAMP = {"type": "string", "format": "date-time", "description": "ISO 8601, UTC, with a Z."}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["title", "status", "timestamp", "detail"],
        "properties": {
            "title": {"type": "string", "description": "The HTTP reason phrase, e.g. Bad Request."},
            "status": {"type": "integer"},
            "timestamp": TIMESTAMP,
            "detail": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {
                        "type": "string",
                        "description": "Stable snake_case error code: the name in docs/errors.md for errors raised "
                        "in SQL (e.g. invalid_events), else e.g. missing_api_key, malformed_json, body_too_large, "
                        "database_unavailable.",
                    },
                    "message": {"type": "string"},
                    "sqlstate": {"type": "string", "description": "The SQLSTATE, for errors raised by the database."},
                    "field": {"type": "string", "description": "The invalid field, when one is to blame."},
                    "hint": {"type": "string", "description": "What to do about it."},
                    "invalids": {
                        "type": "array",
                        "description": "Every invalid event of a refused batch (`event`), or the first 100 invalid "
                        "rows of a refused snapshot (`row`).",
                        "items": {
                            "type": "object",
                            "required": ["message"],
                            "properties": {
                                "event": {"type": "integer", "description": "Index in the batch, from 0."},
                                "row": {"type": "integer", "description": "Line in the CSV; the header is line 1."},
                                "message": {"type": "string"},
                                "problems": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                    },
                },
            },
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["title", "status", "timestamp"],
        "properties": {
            "title": {"const": "Accepted"},
            "status": {"const": 202},
            "timestamp": TIMESTAMP,
            "accepted": {"type": "integer", "description": "Passthrough events stored."},
            "ignored": {"type": "integer", "description": "Events of another type, acknowledged and not stored."},
            "changed": {"type": "integer", "description": "(identifier, audience) pairs whose state changed."},
        },
    },
    "Event": {
        "type": "object",
        "description": "An ODP event. Only type passthrough is stored; its rules are in docs/semantics.md.",
        "properties": {
            "type": {"type": "string", "examples": ["passthrough"]},
            "action": {"type": "string", "enum": ["qualify", "disqualify"]},
            "identifiers": {
                "type": "object",
                "description": "Exactly one high-confidence identifier, e.g. {\"fs_user_id\": \"user-1\"}.",
                "additionalProperties": {"type": "string"},
            },
            "data": {
                "type": "object",
                "properties": {
                    "audience_id": {"type": "string", "description": "The external audience id."},
                    "ts": {"type": "number", "description": "Event time, seconds since the Unix epoch."},
                    "idempotence_id": {"type": "string"},
                },
            },
        },
    },
    "EventsBody": {"oneOf": [_ref("Event"), {"type": "array", "items": _ref("Event")}]},
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
    "Changes": {
        "type": "object",
        "required": ["changes", "next"],
        "properties": {
            "changes": {"type": "array", "items": _ref("Change")},
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
    "SnapshotResult": {
        "type": "object",
        "required": ["audience_id", "applied", "snapshot_at", "listed", "to_qualify", "to_disqualify", "unchanged",
                     "kept_newer", "members_before", "batch_id", "changed"],
        "properties": {
            "audience_id": {"type": "string"},
            "applied": {"type": "boolean", "description": "False for a dry run."},
            "snapshot_at": {**TIMESTAMP, "description": "T (UTC, with a Z)."},
            "listed": {"type": "integer", "description": "Distinct identifiers in the snapshot."},
            "to_qualify": {"type": "integer", "description": "Listed and not qualified now: they become members."},
            "to_disqualify": {"type": "integer",
                              "description": "Qualified by an event older than T and not listed: they leave."},
            "unchanged": {"type": "integer", "description": "Listed and qualified now."},
            "kept_newer": {"type": "integer",
                           "description": "Where the snapshot disagrees with an event at or after T, which stands."},
            "members_before": {"type": "integer", "description": "Qualified members before the import."},
            "batch_id": {"type": ["integer", "null"], "description": "The batch holding the import's events."},
            "changed": {"type": "integer", "description": "(identifier, audience) pairs whose state changed."},
            "diff": {
                "type": "array",
                "description": "Dry run only: the changes, by change, identifier type and identifier, up to "
                "`diff_limit` (unchanged members are left out).",
                "items": _ref("SnapshotChange"),
            },
            "diff_truncated": {"type": "boolean", "description": "Dry run only: `diff` was cut at `diff_limit`."},
        },
    },
    "SnapshotChange": {
        "type": "object",
        "required": ["change", "identifier_type", "identifier", "current_ts", "snapshot_ts"],
        "properties": {
            "change": {"type": "string", "enum": ["qualify", "disqualify", "kept_newer"]},
            "identifier_type": {"type": "string"},
            "identifier": {"type": "string"},
            "current_ts": {**TIMESTAMP, "type": ["string", "null"],
                           "description": "The deciding event's time now; null for an identifier not known yet."},
            "snapshot_ts": {**TIMESTAMP, "description": "The time the snapshot gives it: its row's ts, else T."},
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
    "GraphQLRequest": {
        "type": "object",
        "required": ["query"],
        "properties": {
            "query": {"type": "string"},
            "variables": {"type": ["object", "null"]},
            "operationName": {"type": ["string", "null"]},
        },
    },
    "GraphQLError": {
        "type": "object",
        "required": ["message", "locations", "extensions"],
        "properties": {
            "message": {"type": "string"},
            "locations": {
                "type": "array",
                "items": {"type": "object", "properties": {"line": {"type": "integer"}, "column": {"type": "integer"}}},
            },
            "path": {"type": "array", "items": {"type": ["string", "integer"]}},
            "extensions": {
                "type": "object",
                "required": ["classification", "code"],
                "properties": {
                    "classification": {"type": "string", "description": "graphql-java's classification."},
                    "code": {"type": "string", "examples": ["INVALID_IDENTIFIER_EXCEPTION"]},
                },
            },
        },
    },
    "GraphQLErrors": {
        "type": "object",
        "required": ["errors"],
        "properties": {"errors": {"type": "array", "items": _ref("GraphQLError")}},
    },
    "GraphQLResponse": {
        "type": "object",
        "properties": {
            "data": {"type": ["object", "null"]},
            "errors": {"type": "array", "items": _ref("GraphQLError")},
        },
    },
    "Health": {"type": "object", "properties": {"status": {"const": "ok"}}},
    "Ready": {
        "type": "object",
        "properties": {"status": {"const": "ready"}, "passthrough_enabled": {"type": "boolean"}},
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Passthrough",
        "version": __version__,
        "description": "ODP-compatible events and segments endpoints, and audience snapshot imports, backed by "
        "PostgreSQL. Authenticate with an "
        f"API key in the `{API_KEY_HEADER}` header (`passthrough keys create --name NAME --scope public|private`): "
        "public keys may send events (and read GraphQL); private keys may do everything. Browsers: `POST /v3/events` "
        "and `/v3/graphql` answer CORS preflights (`OPTIONS`: 200, or 400 for an origin not allowed) and allow any "
        "origin unless `PASSTHROUGH_CORS_ORIGINS` says otherwise; the other routes allow no origin unless "
        "`PASSTHROUGH_CORS_PRIVATE_ORIGINS` names it. Any request with both `Transfer-Encoding` and "
        "`Content-Length` is refused with 400 and the connection closed (RFC 9112, section 6.3): by the HTTP "
        "parser of `passthrough serve` (httptools), before the API sees it, or else with 400 `ambiguous_framing`.",
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}},
    },
}

_RENDERED = orjson.dumps(DOCUMENT)


async def openapi_json(request: Request) -> Response:
    return Response(_RENDERED, media_type="application/json")
