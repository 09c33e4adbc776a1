"""GET /healthz (the process is up) and GET /readyz (the database is reachable and migrated).

Both are public: they reveal nothing but whether the service can work, which load balancers and
orchestrators must be able to ask without a key.
"""

from __future__ import annotations

import psycopg
from psycopg import AsyncConnection
from starlette.requests import Request

from pyapp import errors
from pyapp.migrate import LEDGER_SCHEMA, pending_migrations
from pyapp.web.database import read
from pyapp.web.responses import ApiError, JSONResponse


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
    return JSONResponse({"status": "ready", "passthrough_enabled": enabled})


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
