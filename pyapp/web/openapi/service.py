"""The service's own routes: liveness, readiness and this description."""

from __future__ import annotations

from typing import Any

from pyapp.web.openapi.parts import JSON, error, ok, operation

PATHS: dict[str, Any] = {
    "/healthz": {
        "get": operation(
            "healthz", "The process is up.", scope=None, responses={"200": ok("The process is up.", "Health")}
        )
    },
    "/readyz": {
        "get": operation(
            "readyz",
            "The database is reachable and migrated.",
            scope=None,
            responses={
                "200": ok("Ready to serve.", "Ready"),
                "503": error("The database is unreachable or busy (`database_unavailable`), lacks migrations "
                              "(`not_migrated`), or cannot run Passthrough's PL/pgSQL functions (`not_ready`)."),
            },
        )
    },
    "/openapi.json": {
        "get": operation(
            "openapi", "This document.", scope=None, responses={"200": {"description": "The OpenAPI document.",
                                                                        "content": {JSON: {"schema": {"type": "object"}}}}}
        )
    },
}

SCHEMAS: dict[str, Any] = {
    "Health": {"type": "object", "properties": {"status": {"const": "ok"}}},
    "Ready": {
        "type": "object",
        "properties": {"status": {"const": "ready"}, "passthrough_enabled": {"type": "boolean"}},
    },
}
