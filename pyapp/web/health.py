"""GET /healthz (the process is up) and GET /readyz (the database is reachable and migrated; with a read replica,
also whether the replica answers and how far behind the primary its replay is: reported, never a 503, since the
primary alone still takes every write; docs/operations.md, "Read replicas").

Both are public: they reveal nothing but whether the service can work, which load balancers and
orchestrators must be able to ask without a key.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from pyapp import errors
from pyapp.migrate import LEDGER_SCHEMA, pending_migrations
from pyapp.web.database import REPLICA, connection_after, read
from pyapp.web.responses import ApiError, JSONResponse

log = logging.getLogger("passthrough.http")

# How long /readyz waits for a replica connection (busy readers hold them all) before saying so.
REPLICA_CHECK_TIMEOUT = 2.0
# The replica's replay, measured against the primary's WAL position read just before (``primary_lsn``): bytes of
# WAL not replayed yet, and the seconds since the last replayed transaction committed while any are (0 when none).
REPLICA_SQL = """
SELECT pg_catalog.pg_is_in_recovery(),
       CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_is_wal_replay_paused() END,
       lag.bytes,
       CASE WHEN lag.bytes = 0 THEN 0
            ELSE extract(epoch FROM pg_catalog.now() - pg_catalog.pg_last_xact_replay_timestamp()) END
FROM (SELECT greatest(0, pg_catalog.pg_wal_lsn_diff(%s::pg_catalog.pg_lsn, pg_catalog.pg_last_wal_replay_lsn()))
             ::bigint AS bytes) lag
"""


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    # only reads: run again on another connection if the first one turns out broken (database.py)
    try:
        enabled = await read(request, lambda conn: _ready(request, conn))
    except psycopg.Error as exc:
        if errors.is_transient(exc):
            raise  # 503 database_unavailable, as for every route
        # the database answers but cannot run what requests use (e.g. PL/pgSQL fails to load: 58P01)
        raise ApiError(503, "not_ready", f"the database cannot run Passthrough's functions: "
                       f"{exc.sqlstate}: {errors.sql_error_fields(exc)[1]}") from exc
    body: dict[str, Any] = {"status": "ready", "passthrough_enabled": enabled}
    replica = request.app.state.pools.get(REPLICA)
    if replica is not None:
        primary_lsn = await read(request, _current_lsn)
        body["replica"] = await _replica_state(replica, primary_lsn)
    return JSONResponse(body)


async def _current_lsn(conn: AsyncConnection) -> str:
    cursor = await conn.execute("SELECT pg_catalog.pg_current_wal_lsn()::text")
    return (await cursor.fetchone())[0]


async def _replica_state(pool: AsyncConnectionPool, primary_lsn: str) -> dict[str, Any]:
    """Whether the replica answers, and its replay's lag (REPLICA_SQL); ``"error"`` says why it does not."""
    async def measure(conn: AsyncConnection) -> tuple[Any, ...]:
        cursor = await conn.execute(REPLICA_SQL, (primary_lsn,))
        return await cursor.fetchone()

    try:
        async with connection_after(pool, measure, timeout=REPLICA_CHECK_TIMEOUT) as (_, row):
            in_recovery, paused, lag_bytes, lag_seconds = row
    except Exception as exc:  # unreachable, refusing, or every connection busy for REPLICA_CHECK_TIMEOUT
        # /readyz is public: the kind of failure only, the detail (which may name hosts) goes to the log
        log.warning("/readyz: the read replica does not answer: %s", exc)
        return {"reachable": False, "error": type(exc).__name__}
    if not in_recovery:  # a primary of its own (promoted, or a logical replica): no replay to measure
        return {"reachable": True, "in_recovery": False}
    return {"reachable": True, "in_recovery": True, "replay_paused": paused, "replay_lag_bytes": lag_bytes,
            "replay_lag_seconds": None if lag_seconds is None else round(float(lag_seconds), 3)}


async def _ready(request: Request, conn: AsyncConnection) -> bool:
    """Whether passthrough is enabled; 503 not_migrated when the database lacks packaged migrations."""
    cursor = await conn.execute(
        "SELECT (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'passthrough'),"
        " to_regclass(%s) IS NOT NULL",
        (f"{LEDGER_SCHEMA}.applied",),
    )
    extension_version, has_ledger = await cursor.fetchone()
    applied: dict[str, str] = {}
    if has_ledger:
        cursor = await conn.execute(f"SELECT filename, sha256 FROM {LEDGER_SCHEMA}.applied")
        applied = dict(await cursor.fetchall())
    pending = pending_migrations(applied, extension_version, request.app.state.migrations)
    if pending:
        raise ApiError(
            503,
            "not_migrated",
            f"the database does not have these migrations as packaged: {', '.join(pending)}; "
            "run `passthrough migrate` (or start the server without --no-migrate)",
        )
    cursor = await conn.execute("SELECT passthrough.is_enabled()")  # PL/pgSQL, like every write (sql/functions/010_settings.sql)
    return (await cursor.fetchone())[0]
