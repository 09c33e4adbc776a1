"""Background upkeep: the expiry sweeper and retention pruning, as calls of their SQL functions.

Both rules live in SQL (sql/functions/100_expiry.sql, sql/functions/240_retention.sql); this module only calls
``passthrough.expire_memberships`` and ``passthrough.prune_history`` in chunks, each chunk its own
transaction, until a chunk comes back short. ``passthrough serve`` runs ``Upkeep`` in the background;
``passthrough expire`` and ``passthrough prune`` run one round from the command line (or pg_cron calls
the functions directly).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pyapp.background import BackgroundLoop

log = logging.getLogger("passthrough.upkeep")

EXPIRE_CHUNK = 10_000
PRUNE_CHUNK = 50_000


def expire_all(conn: Any, chunk: int = EXPIRE_CHUNK) -> int:
    """Record every due expiry (psycopg or pg8000 connection, autocommit or not); return how many."""
    total = 0
    while True:
        n = _call(conn, "SELECT passthrough.expire_memberships(%s)", chunk)[0]
        total += n
        if n < chunk:
            return total


def prune_all(conn: Any, chunk: int = PRUNE_CHUNK) -> tuple[int, int, int]:
    """Apply the retention setting in chunks; return (events, changes, snapshot members) deleted."""
    events = changes = members = 0
    while True:
        e, c, m = _call(conn, "SELECT events, changes, snapshot_members FROM passthrough.prune_history(%s)", chunk)
        events, changes, members = events + e, changes + c, members + m
        if e < chunk and c < chunk and m < chunk:
            return events, changes, members


def _call(conn: Any, sql: str, arg: int) -> tuple:
    cur = conn.cursor()
    try:
        cur.execute(sql, (arg,))
        row = cur.fetchone()
    finally:
        cur.close()
    if not getattr(conn, "autocommit", False):
        conn.commit()  # each chunk is its own transaction: locks are held briefly
    return tuple(row)


class Upkeep(BackgroundLoop):
    """Runs the sweeper every ``expire_every`` seconds and pruning every ``prune_every`` seconds."""

    task_name = "passthrough-upkeep"

    def __init__(self, expire_every: float, prune_every: float) -> None:
        super().__init__()
        self.expire_every = expire_every
        self.prune_every = prune_every

    async def _run(self, pool: Any) -> None:
        next_prune = time.monotonic()
        last_error: str | None = None  # the same failure every few seconds is logged once
        while not self._stopping.is_set():
            try:
                async with pool.connection() as conn:  # autocommit: each call is its own transaction
                    while not self._stopping.is_set():
                        cur = await conn.execute("SELECT passthrough.expire_memberships(%s)", (EXPIRE_CHUNK,))
                        if (await cur.fetchone())[0] < EXPIRE_CHUNK:
                            break
                    while time.monotonic() >= next_prune and not self._stopping.is_set():
                        cur = await conn.execute(
                            "SELECT events, changes, snapshot_members FROM passthrough.prune_history(%s)",
                            (PRUNE_CHUNK,),
                        )
                        if all(n < PRUNE_CHUNK for n in await cur.fetchone()):
                            next_prune = time.monotonic() + self.prune_every
            except Exception as exc:  # the database may be down or not migrated yet: try again later
                message = f"{type(exc).__name__}: {exc}"
                log.log(logging.DEBUG if message == last_error else logging.WARNING, "upkeep: %s", message)
                last_error = message
            else:
                last_error = None
            await self._pause(self.expire_every)
