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
            "The database is reachable and migrated; with a read replica (`--read-database-url`), also whether the "
            "replica answers and how far its replay lags (reported only: the primary alone takes every write).",
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
    "/metrics": {
        "get": operation(
            "metrics",
            "The service's metrics, in the Prometheus text format.",
            scope="private",
            description="Requests by route and status with their latency, events accepted, ignored and refused, "
                        "batches applied, memberships changed, each worker's pool use, and from the database: each "
                        "webhook's lag, the expiry backlog and the time since retention pruning last finished "
                        "(docs/operations.md, \"Metrics\", lists every metric). Needs a private key unless "
                        "`passthrough serve --metrics-auth` says not: by default (`auto`) none while the server "
                        "listens on loopback only. While the database is down it still answers, with "
                        "`passthrough_service_metrics_up 0` and without the database's metrics.",
            responses={"200": {"description": "The metrics (text exposition format 1.0.0).",
                               "content": {"text/plain": {"schema": {"type": "string"}}}}},
        )
    },
}

SCHEMAS: dict[str, Any] = {
    "Health": {"type": "object", "properties": {"status": {"const": "ok"}}},
    "Ready": {
        "type": "object",
        "properties": {"status": {"const": "ready"}, "passthrough_enabled": {"type": "boolean"},
                       "replica": {"$ref": "#/components/schemas/ReplicaState"}},
        "required": ["status", "passthrough_enabled"],
    },
    "ReplicaState": {
        "type": "object",
        "description": "Only with a read replica. `replay_lag_bytes`: WAL the replica has not replayed yet; "
                       "`replay_lag_seconds`: 0 when none, else the age of the last transaction it replayed.",
        "properties": {
            "reachable": {"type": "boolean"},
            "error": {"type": "string", "description": "Why not reachable: the kind of failure."},
            "in_recovery": {"type": "boolean", "description": "false: the server is not a standby (promoted)."},
            "replay_paused": {"type": "boolean"},
            "replay_lag_bytes": {"type": "integer", "minimum": 0},
            "replay_lag_seconds": {"type": ["number", "null"], "minimum": 0},
        },
        "required": ["reachable"],
    },
}
