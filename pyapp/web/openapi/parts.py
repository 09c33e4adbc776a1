"""The pieces every resource's description shares: references, responses, one operation, common parameters,
the Error schema."""

from __future__ import annotations

from typing import Any

from pyapp.web.auth import API_KEY_HEADER

JSON = "application/json"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": ref(schema)}}}


def error(description: str, schema: str = "Error") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": ref(schema)}}}


def operation(
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
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": ref(body)}}}
    if request_body:
        op["requestBody"] = request_body
    if scope is None:
        op["security"] = []
        op["responses"] = responses
        return op
    op["security"] = [{"ApiKey": []}]
    op["x-required-scope"] = scope
    secured = {"401": error(f"No `{API_KEY_HEADER}` header, or the key is unknown or revoked.", error_schema)}
    if scope == "private":
        secured["403"] = error("The key is public and this operation needs a private key.", error_schema)
    unavailable = error(
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

NUL_IN_ID = error("The id holds a character PostgreSQL cannot store (NUL).")

BODY_ERRORS = {
    "400": error(
        "The body is not a JSON object of the documented shape, a field is invalid (`detail.field` names it), "
        "or the segment id is outside [a-z0-9_]+. Also: wrong Content-Type, malformed JSON or gzip."
    ),
    "413": error("The body is larger than the limit (before or after gzip decompression)."),
}


def query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}



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
}


def shipped_file(operation_id: str, summary: str, folder: str, version: str, name: str) -> dict[str, Any]:
    """GET of one of the files a page loads, shipped with the server (pyapp/web/shipped_files.py)."""
    return operation(
        operation_id,
        summary,
        description=f"The versions and licences: {folder}/ASSETS.md. Gzipped when the client accepts it; "
        "cacheable for ever (the version is in the path).",
        scope=None,
        parameters=[
            {"name": "version", "in": "path", "required": True, "schema": {"type": "string"},
             "description": f"The package and version, e.g. `{version}`."},
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
             "description": f"The file, e.g. `{name}`."},
        ],
        responses={
            "200": {"description": "The file.", "content": {
                "text/javascript": {"schema": {"type": "string"}}, "text/css": {"schema": {"type": "string"}}}},
            "404": error("No such file."),
        },
    )
