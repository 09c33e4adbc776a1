"""One worker of a deployment runs the background jobs: the one holding a PostgreSQL advisory lock.

``passthrough serve --workers N`` runs N processes, and several servers may share one database. The
expiry sweeper, retention pruning and webhook delivery must run once per deployment, not once per
process: each worker tries a session advisory lock (``pg_try_advisory_lock``) on a connection of its
own, outside the pool; the worker that gets it starts the jobs and keeps the connection (and so the
lock) while it runs; the others try again every ``retry`` seconds, so when the leader stops or dies (its
session ends, and with it the lock) another takes over within that time. The leader also checks its
connection every ``retry`` seconds: if it broke (the database restarted), the jobs stop until it leads
again. Jobs that hold per-process state (the GraphQL schema's listener) are not among them.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any, Protocol

import psycopg

from pyapp.background import BackgroundLoop

log = logging.getLogger("passthrough.leader")

# The audience lock space of sql/functions/150_writer.sql (passthrough._audience_lock_space()), with a key no
# audience has: the lock of the background jobs
LOCK_KEYS = (1886650368, -1)
TRY_LOCK_SQL = "SELECT pg_try_advisory_lock(%s, %s)"
APPLICATION_NAME = "passthrough-jobs"  # the connection that holds (or waits for) the lock


class Job(Protocol):
    async def start(self, pool: Any) -> None: ...

    async def close(self) -> None: ...


class Leadership(BackgroundLoop):
    """Runs ``jobs`` (each with ``start(pool)`` and ``close()``) while this process holds the lock."""

    task_name = "passthrough-leadership"

    def __init__(self, database_url: str, jobs: list[Job], retry: float = 5.0) -> None:
        super().__init__()
        self.database_url = database_url
        self.jobs = jobs
        self.retry = retry
        self.leading = False

    async def _run(self, pool: Any) -> None:
        last_error: str | None = None  # the same failure every few seconds is logged once
        while not self._stopping.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(
                        self.database_url, autocommit=True, application_name=APPLICATION_NAME) as conn:
                    if await self._try_lock(conn):
                        await self._lead(conn, pool)
                last_error = None
            except Exception as exc:  # the database is down, say: try again later
                message = f"{type(exc).__name__}: {exc}"
                log.log(logging.DEBUG if message == last_error else logging.WARNING, "leadership: %s", message)
                last_error = message
            await self._pause(self.retry)

    async def _try_lock(self, conn: psycopg.AsyncConnection) -> bool:
        # a connection that does not get the lock keeps trying, rather than connecting anew each time
        while not self._stopping.is_set():
            cursor = await conn.execute(TRY_LOCK_SQL, LOCK_KEYS)
            if (await cursor.fetchone())[0]:
                return True
            await self._pause(self.retry)
        return False

    async def _lead(self, conn: psycopg.AsyncConnection, pool: Any) -> None:
        log.info("this worker runs the background jobs (expiry, retention, webhooks)")
        started: list[Job] = []
        try:
            for job in self.jobs:
                await job.start(pool)
                started.append(job)
            self.leading = True  # once every job runs
            while not self._stopping.is_set():
                await self._pause(self.retry)
                await conn.execute("SELECT 1")  # still holding the lock: the session is alive
        finally:
            self.leading = False
            for job in reversed(started):
                with suppress(Exception):
                    await job.close()

