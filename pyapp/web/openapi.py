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
from pyapp.web.config import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_EVENTS

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
    description: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
    error_schema: str = "Error",
) -> dict[str, Any]:
    """One operation. ``scope`` None is public; "public"/"private" adds the key's 401 (and 403 for a
    private operation) and the database's 503, answered with ``error_schema``."""
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref(body)}}}
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
    op["responses"] = {**responses, **secured, "503": unavailable}
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
Optimizely SDKs send) are acknowledged and not stored, and counted in `ignored`. A batch with any invalid
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
        "schema": {"type": "string", "examples": ["7423-12-3"]},
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "At most this many changes, 1 to 10000 (default 1000).",
        "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000},
    },
]

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
                "503": _error("The database is unreachable, busy, or lacks migrations (`detail.code` says which)."),
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
                "403": _error("Passthrough is disabled: an operator enables it with `passthrough enable`."),
                "413": _error(
                    f"More events than the limit ({DEFAULT_MAX_EVENTS} by default), or a body over the size limit."
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
            description="See pyapp/web/graphql.py for the schema. GraphQL errors (an invalid identifier, a "
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
                        "description": "Every invalid event of a refused batch.",
                        "items": {
                            "type": "object",
                            "required": ["event", "message"],
                            "properties": {
                                "event": {"type": "integer", "description": "Index in the batch, from 0."},
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
            "change": {"type": "string", "enum": ["entered", "exited"]},
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
        "description": "ODP-compatible events and segments endpoints backed by PostgreSQL. Authenticate with an "
        f"API key in the `{API_KEY_HEADER}` header (`passthrough keys create --name NAME --scope public|private`): "
        "public keys may send events (and read GraphQL); private keys may do everything.",
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
