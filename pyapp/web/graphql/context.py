"""The resolvers' per-request context: one pooled connection for all of a query's statements."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from pyapp import errors
from pyapp.web import database
from pyapp.web.auth import GATE_SQL, KEY_REFUSED_SQLSTATES, Scope, check_key
from pyapp.web.graphql.errors import FacadeError
from pyapp.web.graphql.limits import GraphQLLimits


@dataclass
class Context:
    """What the resolvers of one request share: the limits, and one pooled connection, checked out by
    the first resolver that reads and returned by ``close()`` when the request is answered (so a query
    costs one checkout whatever its number of fields). Resolvers that run at once take turns on it.
    Every statement the facade runs is a read, so one that meets a broken connection (the database
    restarted since the connection was last used) runs again, once, on another (pyapp/web/database.py)."""

    pool: AsyncConnectionPool
    limits: GraphQLLimits
    # the request's key hash while no statement has checked it yet (auth.py): the first statement checks it
    key_gate: bytes | None = None
    # where the key is checked instead when ``pool`` is a replica's (the primary's read pool): beside the first
    # statement, at the same time, since the replica may not have replayed the key's revocation yet
    key_pool: AsyncConnectionPool | None = None
    # the database refused the key (PT037/PT038): the request is answered with that error alone
    key_refused: psycopg.Error | None = None
    _conn: psycopg.AsyncConnection | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _closed: bool = False

    async def fetchall(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """One SQL statement (autocommit): one round trip, plus the checkout for the request's first."""
        async with self._lock:
            if self._closed:  # a resolver still running after the answer was sent: nobody reads its result
                raise FacadeError(errors.INTERNAL_MESSAGE, "INTERNAL_ERROR")

            used: list[psycopg.AsyncConnection] = []  # the connection of the last attempt

            async def attempt(_: int) -> list[tuple[Any, ...]]:
                if self._conn is None:
                    self._conn = await self.pool.getconn()
                conn = self._conn
                used[:] = [conn]
                gate = self.key_gate
                beside = gate is not None and self.key_pool is not None
                gated = gate is not None and not beside
                statement, args = (GATE_SQL.format(sql), (*params, gate)) if gated else (sql, params)
                try:
                    if beside:
                        rows = await self._read_beside_key_check(conn, statement, args, gate)
                    else:
                        cursor = await conn.execute(statement, args)
                        rows = await cursor.fetchall()
                except psycopg.Error as exc:
                    if gate is not None and exc.sqlstate in KEY_REFUSED_SQLSTATES:
                        self.key_refused = exc
                    if database.is_broken(exc, conn):
                        await self._release()  # back to the pool, which notes it broken; a retry takes another
                    raise
                self.key_gate = None
                return rows

            return await database.attempts(attempt, database.broken_once(self.pool, lambda: used[0]))

    async def _read_beside_key_check(self, conn: psycopg.AsyncConnection, statement: str, args: tuple[Any, ...],
                                     gate: bytes | None) -> list[tuple[Any, ...]]:
        """The statement's rows, once the key has also been found valid on ``key_pool``; both at once, so a read
        on a replica costs the longer of the two round trips, not their sum. A refused key wins over the read."""
        assert self.key_pool is not None and gate is not None

        async def read() -> list[tuple[Any, ...]]:
            cursor = await conn.execute(statement, args)
            return await cursor.fetchall()

        rows, key = await asyncio.gather(read(), check_key(self.key_pool, gate, Scope.PUBLIC), return_exceptions=True)
        for outcome in (key, rows):
            if isinstance(outcome, BaseException):
                raise outcome
        assert isinstance(rows, list)
        return rows

    async def check_key(self) -> None:
        """Check the key now if no statement has (a query that read nothing): sets ``key_refused``."""
        if self.key_gate is not None:
            try:
                await self.fetchall("SELECT 1", ())
            except psycopg.Error as exc:
                if self.key_refused is None:
                    raise

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            await self._release()

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self.pool.putconn(conn)
