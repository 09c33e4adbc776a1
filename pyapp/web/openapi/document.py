"""GET /openapi.json: the OpenAPI 3.1 description of the HTTP API, assembled from one module per resource.

tests/test_http_openapi.py keeps it true: every route of the app appears here with its methods,
every status a test receives is documented for its operation, and the scope each operation
declares (``x-required-scope``, or ``security: []`` for public ones) is the one it enforces.
When you add an endpoint, describe it in its resource's module.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from pyapp import __version__
from pyapp.web.auth import API_KEY_HEADER
from pyapp.web.openapi import changes, console, events, graphql, parts, segments, service, snapshots

RESOURCES = (service, events, snapshots, changes, segments, graphql, console)
PATHS: dict[str, dict[str, Any]] = {path: item for resource in RESOURCES for path, item in resource.PATHS.items()}
SCHEMAS: dict[str, Any] = {name: schema for module in (parts, *RESOURCES) for name, schema in module.SCHEMAS.items()}

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
