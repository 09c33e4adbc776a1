"""The app's connection pools: opened and closed by the app's lifespan, shared by every endpoint. Connections are
in autocommit mode: a single statement is its own transaction; several that must be all-or-nothing use
``conn.transaction()``.

A connection broken by a database restart (or ``pg_terminate_backend``) must not fail a request
(docs/reliability.md). ``Pool`` checks at checkout only those that may be broken without anyone having noticed; the
rest are caught by the request's first statement: the API-key lookup and every read run through
``connection_after``/``read``, which replace a broken connection and run the read again, once. A write is never
run again after a broken connection: whether it was committed is unknown.

Budgets (``make_pools``): a read pool, whose statements time out, and a write pool, whose statements do not,
together the worker's ``pool_max_size`` (pyapp/serving.py); reads never wait for a writer's connection nor writers
for theirs (docs/reliability.md, "Abuse"). With a read replica (``ApiConfig.read_database_url``), a third pool of
the read pool's size: REPLICA routes read there and check their API key on the primary (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import logging
import random
import select
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from time import monotonic
from typing import Any, Literal, TypeVar

import orjson
import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from pyapp.web.config import ApiConfig

T = TypeVar("T")

log = logging.getLogger("passthrough.pool")

# A deadlock (40P01) or serialization failure (40001) rolls the whole transaction back, so running it again
# is safe; it is retried this many times in all before the client gets 503 (docs/reliability.md).
RETRIED_SQLSTATES = frozenset({"40001", "40P01"})
MAX_TRANSACTION_ATTEMPTS = 4



async def attempts(run: Callable[[int], Awaitable[T]], again: Callable[[BaseException, int], Awaitable[bool]]) -> T:
    """``run(1)``, and after a failure ``run(2)``, ... for as long as ``again(exc, attempt)`` says the failure of that
    attempt may be retried (having waited as it likes, or let the pool recover); otherwise the failure propagates.
    The one retry loop of the HTTP layer: every route's and the GraphQL facade's retries go through it."""
    attempt = 1
    while True:
        try:
            return await run(attempt)
        except Exception as exc:
            if not await again(exc, attempt):
                raise
        attempt += 1


async def transaction_failed_harmlessly(exc: BaseException, attempt: int) -> bool:
    """``again`` for a transaction: a deadlock or serialization failure stored nothing, so it runs again after a
    short random pause, up to MAX_TRANSACTION_ATTEMPTS attempts in all."""
    if not isinstance(exc, psycopg.Error) or exc.sqlstate not in RETRIED_SQLSTATES or attempt >= MAX_TRANSACTION_ATTEMPTS:
        return False
    await asyncio.sleep(random.uniform(0.005, 0.02 * attempt))
    return True


def broken_once(pool: AsyncConnectionPool, used: Callable[[], psycopg.AsyncConnection | None]) -> Callable[
        [BaseException, int], Awaitable[bool]]:
    """``again`` for a read: the connection ``used()`` of the first attempt turned out broken (the database
    restarted since it was last used), so the read runs once more, on another connection, once the pool has
    replaced its broken ones."""
    async def again(exc: BaseException, attempt: int) -> bool:
        conn = used()
        if attempt != 1 or conn is None or not is_broken(exc, conn):
            return False
        log.info("connection found broken; trying another: %s", exc)
        await after_broken(pool)
        return True
    return again


Budget = Literal["read", "write", "replica"]
READ: Budget = "read"
WRITE: Budget = "write"
# reads that may lag behind the writes: the replica's pool when there is one, else the read pool
REPLICA: Budget = "replica"
# The ASGI scope key under which a route names its budget (pyapp/web/app.py)
BUDGET_SCOPE_KEY = "passthrough.budget"

# A connection returned to the pool less than this long ago, and after the last broken connection
# seen, is handed out without a check; any other one is checked first (one round trip).
IDLE_CHECK_SECONDS = 1.0


class Pool(AsyncConnectionPool):
    """An ``AsyncConnectionPool`` that checks at checkout (one round trip) only the connections that may be broken
    without anyone having noticed: those idle for ``idle_check_seconds`` or more, and those last returned before a
    broken connection was seen anywhere, since a restart breaks them all at once. The first broken one seen also
    starts a check of every idle connection (``check()``). What is left, a connection used less than
    ``idle_check_seconds`` ago and broken since without anybody noticing, is caught by the request's first
    statement (the module's docstring)."""

    def __init__(self, *args: Any, idle_check_seconds: float = IDLE_CHECK_SECONDS, **kwargs: Any) -> None:
        self.idle_check_seconds = idle_check_seconds
        self._returned_at: weakref.WeakKeyDictionary[psycopg.AsyncConnection, float] = weakref.WeakKeyDictionary()
        self._broken_seen_at = float("-inf")
        self._recovery: asyncio.Task[None] | None = None
        super().__init__(*args, check=self._check_if_stale, **kwargs)

    async def _check_if_stale(self, conn: psycopg.AsyncConnection) -> None:
        returned_at = self._returned_at.get(conn)
        if (
            returned_at is not None
            and returned_at > self._broken_seen_at
            and monotonic() - returned_at < self.idle_check_seconds
        ):
            return
        try:
            await self.check_connection(conn)  # one round trip
        except Exception:
            self.note_broken()
            raise

    async def putconn(self, conn: psycopg.AsyncConnection) -> None:
        if conn.broken:
            self.note_broken()
        else:
            self._returned_at[conn] = monotonic()
        await super().putconn(conn)

    def note_fresh(self, conn: psycopg.AsyncConnection) -> None:
        """A connection just made: it needs no check before its first use."""
        self._returned_at[conn] = monotonic()

    def note_broken(self) -> None:
        """A connection was found broken: check every connection last used before now at its next
        checkout, and check the idle ones now (in the background)."""
        self._broken_seen_at = monotonic()
        if not self.closed and (self._recovery is None or self._recovery.done()):
            self._recovery = asyncio.get_running_loop().create_task(self._recover(), name="passthrough-pool-check")

    async def _recover(self) -> None:
        try:
            await self.check()  # pings each idle connection, replaces the broken ones
        except Exception:  # the pool is closing, say: the checks at checkout still stand
            log.debug("pool check after a broken connection failed", exc_info=True)

    async def recovered(self) -> None:
        """Wait for the check of the idle connections started by the last broken one seen, if it runs."""
        task = self._recovery
        if task is not None and not task.done():
            await asyncio.shield(task)  # a cancelled request does not cancel the check others wait for

    async def close(self, timeout: float = 5.0) -> None:
        task, self._recovery = self._recovery, None
        if task is not None and not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        await super().close(timeout)


def make_pool(database_url: str, config: ApiConfig, budget: Budget = WRITE) -> Pool:
    """The pool of one budget, not open yet; ``await pool.open()`` in the lifespan. A read connection (of the
    read budget or the replica's) gets the read statement timeout when it is made (no round trip per request)."""
    pool: Pool
    reads = budget != WRITE
    max_size = config.read_pool_max_size if reads else config.write_pool_max_size
    timeout_ms = round(config.read_statement_timeout * 1000) if reads else 0

    async def configure(conn: psycopg.AsyncConnection) -> None:
        set_json_loads(orjson.loads, conn)
        if timeout_ms:
            await conn.execute("SELECT pg_catalog.set_config('statement_timeout', %s, false)", (f"{timeout_ms}ms",))
        pool.note_fresh(conn)

    pool = Pool(
        database_url,
        min_size=min(config.pool_min_size, max_size),
        max_size=max_size,
        timeout=config.pool_timeout,
        kwargs={"autocommit": True, "application_name": config.application_name},
        configure=configure,
        name=f"{config.application_name}-{budget}",
        open=False,
    )
    return pool


def make_pools(database_url: str, config: ApiConfig) -> dict[Budget, Pool]:
    """The read pool and the write pool of one worker (not open yet), sized from ``ApiConfig``. Reads (GraphQL,
    member listings, the change feed, segment reads) take the read pool's connections, whose statements PostgreSQL
    cancels after ``read_statement_timeout``; writes (events, segment changes, the snapshot routes' key check,
    ``/readyz``, the background jobs) take the write pool's, which have no statement timeout. With
    ``config.read_database_url``, also the replica's pool (REPLICA), of the read pool's size and timeout."""
    pools = {READ: make_pool(database_url, config, READ), WRITE: make_pool(database_url, config, WRITE)}
    if config.read_database_url:
        pools[REPLICA] = make_pool(config.read_database_url, config, REPLICA)
    return pools


def get_pool(request: Request) -> AsyncConnectionPool:
    """The pool of the request's budget: the one its route names (``BUDGET_SCOPE_KEY``, set by pyapp/web/app.py),
    else read for GET and HEAD, write for any other method. REPLICA without a replica is the read pool."""
    budget = request.scope.get(BUDGET_SCOPE_KEY) or (READ if request.method in ("GET", "HEAD") else WRITE)
    pools = request.app.state.pools
    return pools.get(budget) or pools[READ]


def get_key_pool(request: Request) -> AsyncConnectionPool:
    """The pool the request's API key is checked on: the primary's, always (a key revoked there is refused from
    the next request on, whatever the replica's lag), so the read pool for a REPLICA route."""
    budget = request.scope.get(BUDGET_SCOPE_KEY)
    return request.app.state.pools[READ] if budget == REPLICA else get_pool(request)


def get_read_pool(request: Request) -> AsyncConnectionPool:
    """The pool of the reads that may lag (GraphQL): the replica's when there is one, else the read pool."""
    return replica_pool(request.app)


def replica_pool(app: Any) -> AsyncConnectionPool:
    """The app's pool for reads that may lag: the replica's when there is one, else the read pool."""
    pools = app.state.pools
    return pools.get(REPLICA) or pools[READ]


def separate_key_pool(app: Any) -> AsyncConnectionPool | None:
    """The primary's read pool when reads go to a replica, where their statements cannot check the API key
    (the replica may not have replayed its revocation yet); None when a read's own statement checks it."""
    pools = app.state.pools
    return pools[READ] if REPLICA in pools else None


def is_broken(exc: BaseException, conn: psycopg.AsyncConnection) -> bool:
    """Whether ``exc`` means that ``conn`` is dead (the server went away), rather than an error of the statement."""
    return isinstance(exc, psycopg.OperationalError) and conn.broken


def closed_by_server(conn: psycopg.AsyncConnection) -> bool:
    """Whether the server has (most likely) closed ``conn`` while it sat idle in the pool (its backend
    terminated, the server restarted): its socket has something to read although nothing was asked (a pool
    connection listens to nothing, so that is the server's goodbye, or rarely a notice). No round trip, so a
    write learns it before it is sent, rather than from a failure that leaves unsaid whether it ran."""
    socket = conn.pgconn.socket if not conn.closed else -1
    return socket < 0 or bool(select.select([socket], [], [], 0)[0])


async def after_broken(pool: AsyncConnectionPool) -> None:
    """Before running a read again on another connection: let the pool replace its broken ones."""
    if isinstance(pool, Pool):
        await pool.recovered()


@asynccontextmanager
async def connection(request: Request) -> AsyncIterator[psycopg.AsyncConnection]:
    """A pooled connection for the duration of the block (autocommit)."""
    async with get_pool(request).connection() as conn:
        yield conn


@asynccontextmanager
async def connection_after(
    pool: AsyncConnectionPool, first: Callable[[psycopg.AsyncConnection], Awaitable[T]],
    timeout: float | None = None,
) -> AsyncIterator[tuple[psycopg.AsyncConnection, T]]:
    """A pooled connection on which ``first(conn)`` has run, and what it returned, for the block (``timeout``:
    for the checkout, else the pool's).

    ``first`` must only read: if the connection turns out to be broken (the database restarted since
    it was last used), it is replaced and ``first`` runs again, once, on another connection. The
    block itself is not run again.
    """
    held: list[psycopg.AsyncConnection] = []  # the connection of the last attempt

    async def attempt(_: int) -> T:
        conn = await pool.getconn(timeout)
        held[:] = [conn]
        try:
            return await first(conn)
        except BaseException:
            await pool.putconn(conn)  # a broken one is discarded
            raise

    result = await attempts(attempt, broken_once(pool, lambda: held[0] if held else None))
    try:
        yield held[0], result
    finally:
        await pool.putconn(held[0])


async def read(request: Request, work: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
    """``work(conn)``, which must only read, on a pooled connection; run again once on another
    connection if the first turns out to be broken (``connection_after``)."""
    async with connection_after(get_pool(request), work) as (_, result):
        return result


async def run_statement(request: Request, work: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
    """``work(conn)``, which must run exactly one statement, in autocommit mode: the statement is its own
    transaction, so it is all-or-nothing, it is committed when this returns, and a failure at commit is an
    error of the statement: one round trip, where a transaction takes three (BEGIN, it, COMMIT). A deadlock
    or serialization failure (nothing was stored) is retried after a short random pause, up to
    MAX_TRANSACTION_ATTEMPTS attempts in all; any other error, or the last attempt's, propagates."""
    pool = get_pool(request)

    async def attempt(_: int) -> T:
        async with pool.connection() as conn:
            if closed_by_server(conn):  # nothing sent yet: another connection, once the pool has replaced it
                await conn.close()
                if isinstance(pool, Pool):
                    pool.note_broken()
                await after_broken(pool)
                async with pool.connection() as other:
                    return await work(other)
            return await work(conn)

    return await attempts(attempt, transaction_failed_harmlessly)

