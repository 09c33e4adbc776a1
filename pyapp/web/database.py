"""The app's connection pool: opened and closed by the app's lifespan, shared by every endpoint.

Connections are in autocommit mode: a single statement is its own transaction, and writes that
must be all-or-nothing use ``conn.transaction()`` explicitly.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import orjson
import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from pyapp.web.config import ApiConfig

T = TypeVar("T")

# A deadlock (40P01) or serialization failure (40001) rolls the whole transaction back, so running it again
# is safe; it is retried this many times in all before the client gets 503 (docs/reliability.md).
RETRIED_SQLSTATES = frozenset({"40001", "40P01"})
MAX_TRANSACTION_ATTEMPTS = 4


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


async def run_transaction(request: Request, work: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
    """``work(conn)`` in one transaction, committed when this returns. A deadlock or serialization failure
    (the transaction was rolled back: nothing is stored) is retried, after a short random pause, up to
    MAX_TRANSACTION_ATTEMPTS attempts in all; any other error, or the last attempt's, propagates."""
    for attempt in range(1, MAX_TRANSACTION_ATTEMPTS + 1):
        try:
            async with connection(request) as conn:
                async with conn.transaction():
                    return await work(conn)
        except psycopg.Error as exc:
            if exc.sqlstate not in RETRIED_SQLSTATES or attempt == MAX_TRANSACTION_ATTEMPTS:
                raise
        await asyncio.sleep(random.uniform(0.005, 0.02 * attempt))
    raise AssertionError("unreachable")  # pragma: no cover
