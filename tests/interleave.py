"""Forcing interleavings of transactions: each Session is one connection driven from a thread of its own, so a
test can leave a statement waiting on another transaction's lock, go on with other sessions, and see it finish
once that transaction ends. Nothing waits for luck: a statement is either finished or seen blocked in
pg_blocking_pids() before the test takes its next step. On a Citus coordinator a statement also waits on the
workers' locks, which pg_blocking_pids() there does not see: Citus's wait graph of every node does."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pyapp.db import connect

WAIT_SECONDS = 20.0  # a statement neither finished nor blocked by then is a failure, not a slow machine


# Waiting on a lock of this node, or (Citus) a worker's backend working for this session waits on one: Citus
# tags a distributed transaction's backends on every node with the global pid of the session that started it.
BLOCKED = "SELECT cardinality(pg_blocking_pids(%(pid)s)) > 0"
BLOCKED_ON_CITUS = (
    BLOCKED + " OR EXISTS (SELECT FROM citus_internal.global_blocked_processes()"
    " WHERE waiting_global_pid = citus_calculate_gpid(get_nodeid_for_groupid(0), %(pid)s))"
)


class Session:
    def __init__(self, url: str, observer: Any, blocked_query: str = BLOCKED) -> None:
        self.conn = connect(url)  # not autocommit: a session holds its transaction open between steps
        self.pid = self.conn.info.backend_pid
        self.observer = observer  # an autocommit connection that watches the lock waits
        self.blocked_query = blocked_query
        self._thread = ThreadPoolExecutor(max_workers=1)
        self.pending: Future | None = None

    def start(self, work) -> Future:
        """Run ``work(conn)`` in the session's thread; returns once it finished or waits on a lock."""
        assert self.pending is None or self.pending.done(), "the session is still busy"
        self.pending = self._thread.submit(work, self.conn)
        self.settle(self.pending)
        return self.pending

    def settle(self, future: Future) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while not future.done():
            if self.blocked():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"session {self.pid}: statement neither finished nor blocked")
            time.sleep(0.002)

    def blocked(self) -> bool:
        return bool(self.observer.execute(self.blocked_query, {"pid": self.pid}).fetchone()[0])

    def run(self, sql: str, params=()) -> list[tuple]:
        """Run one statement and wait for it (it must not block)."""
        def work(c):
            cur = c.execute(sql, params)
            return cur.fetchall() if cur.description else []

        return self._now(work, sql)

    def wait(self) -> Any:
        """The result of the statement left waiting (raises its error)."""
        assert self.pending is not None
        return self.pending.result(timeout=WAIT_SECONDS)

    def commit(self) -> None:
        self._now(lambda c: c.commit(), "COMMIT")

    def rollback(self) -> None:
        self._now(lambda c: c.rollback(), "ROLLBACK")

    def _now(self, work, what: str) -> Any:
        future = self.start(work)
        assert future.done(), f"session {self.pid} is blocked on {what!r}"
        self.pending = None
        return future.result()

    def close(self) -> None:
        if self.pending is not None and not self.pending.done():
            self.conn.cancel()
        self._thread.shutdown(wait=True)
        self.conn.close()


class Sessions:
    """A context manager for a few Sessions on one database, closed (and rolled back) on exit."""

    def __init__(self, url: str, count: int) -> None:
        self.url = url
        self.count = count

    def __enter__(self) -> list[Session]:
        self.observer = connect(self.url, autocommit=True)
        citus = self.observer.execute("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')").fetchone()[0]
        blocked_query = BLOCKED_ON_CITUS if citus else BLOCKED
        self.sessions = [Session(self.url, self.observer, blocked_query) for _ in range(self.count)]
        return self.sessions

    def __exit__(self, *exc) -> None:
        for session in self.sessions:
            session.close()
        self.observer.close()
