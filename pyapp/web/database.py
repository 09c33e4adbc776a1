"""The app's connection pool: opened and closed by the app's lifespan, shared by every endpoint.

Connections are in autocommit mode: a single statement is its own transaction, and writes that
must be all-or-nothing use ``conn.transaction()`` explicitly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from pyapp.web.config import ApiConfig


def make_pool(database_url: str, config: ApiConfig) -> AsyncConnectionPool:
    """A pool that is not open yet; ``await pool.open()`` in the lifespan."""
    return AsyncConnectionPool(
        database_url,
        min_size=config.pool_min_size,
        max_size=config.pool_max_size,
        timeout=config.pool_timeout,
        kwargs={"autocommit": True, "application_name": config.application_name},
        configure=_configure,
        # One round trip per checkout, so that connections broken by a database restart are
        # replaced instead of failing a request each.
        check=AsyncConnectionPool.check_connection,
        name=config.application_name,
        open=False,
    )


async def _configure(conn: psycopg.AsyncConnection) -> None:
    set_json_loads(orjson.loads, conn)


def get_pool(request: Request) -> AsyncConnectionPool:
    return request.app.state.pool


@asynccontextmanager
async def connection(request: Request) -> AsyncIterator[psycopg.AsyncConnection]:
    """A pooled connection for the duration of the block (autocommit)."""
    async with get_pool(request).connection() as conn:
        yield conn
