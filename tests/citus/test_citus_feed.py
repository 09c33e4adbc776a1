"""The change feed on the distributed schema under concurrency, as strictly as on one server
(tests/test_change_feed_order.py): the same forced interleavings, and random scripted ones with a follower
reading between every step. Each pair's changes come in the order its state changed, the replay equals the live
state, and resuming from a cursor never misses nor repeats a change.

A statement is seen waiting before the test takes its next step, as in tests/interleave.py, but on a cluster a
row lock is taken on a worker: the coordinator's pg_blocking_pids() does not see that wait, Citus's
citus_lock_waits does (it asks every node). Every test defines its own audiences (a fresh prefix), so the
tests share the session's one cluster and database; the feed is read whole and filtered to those audiences.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from interleave import Session
from reference_model import Event, MembershipModel, dumps
from test_change_feed_order import (Script, apply_events, expire, load, members, refused, replay, snapshot,
                                    step_st)

from pyapp.db import connect

TS = Decimal(1_760_000_000)
FEED = "SELECT cursor, change, identifier_type, identifier, audience_id FROM passthrough.changes(%s, %s)"


class CitusSession(Session):
    """A Session whose waits are seen on any node of the cluster: on the coordinator by pg_blocking_pids(), on a
    worker by Citus's view of the cluster's lock waits, where a worker's backend carries the global pid of the
    coordinator session it works for."""

    def __init__(self, url: str, observer) -> None:
        super().__init__(url, observer)
        self.gpid = self.conn.execute("SELECT pg_catalog.citus_backend_gpid()").fetchone()[0]
        self.conn.rollback()

    def blocked(self) -> bool:
        return self.observer.execute(
            "SELECT pg_blocking_pids(%s) <> '{}'"
            " OR EXISTS (SELECT 1 FROM pg_catalog.citus_lock_waits WHERE waiting_gpid = %s)",
            (self.pid, self.gpid)).fetchone()[0]


class CitusSessions:
    def __init__(self, url: str, count: int) -> None:
        self.url, self.count = url, count

    def __enter__(self) -> list[Session]:
        self.observer = connect(self.url, autocommit=True)
        self.sessions = [CitusSession(self.url, self.observer) for _ in range(self.count)]
        return self.sessions

    def __exit__(self, *exc) -> None:
        for session in self.sessions:
            session.close()
        self.observer.close()


@dataclass
class Feed:
    """A test's two audiences on the cluster (a: no ttl, t: a one-hour ttl) and an autocommit connection."""

    conn: psycopg.Connection
    a: str
    t: str

    def ev(self, identifier: str, qualified: bool, ts: Decimal, audience: str | None = None) -> Event:
        return Event("fs_user_id", identifier, audience or self.a, qualified, ts)

    def read(self, after: str | None = None, settled: bool = True, limit: int = 7) -> list[tuple]:
        """The feed's changes of these audiences after `after`, page by page (small pages: resuming is exercised
        too). settled: first wait until no committed change waits behind a transaction still open, as a follower
        would; else only what is readable now."""
        deadline = time.monotonic() + 30
        while settled and self.conn.execute("SELECT passthrough.changes_pending()").fetchone()[0]:
            assert time.monotonic() < deadline, "the feed is held back for good"
            time.sleep(0.01)
        out, cursor = [], after
        while True:
            page = self.conn.execute(FEED, (cursor, limit)).fetchall()
            out += [row for row in page if row[4] in (self.a, self.t)]
            if len(page) < limit:
                return out
            cursor = page[-1][0]

    def changes_of(self, identifier: str, audience: str | None = None) -> list[str]:
        return replay(self.read()).get(("fs_user_id", identifier, audience or self.a), [])

    def live_members(self) -> set[tuple[str, str, str]]:
        """Who is in which of these audiences now, through the public read (expiry evaluated at read time), one
        call per customer (Citus would push a call inside a query of memberships down to the shards)."""
        customers = self.conn.execute("""
            SELECT DISTINCT t.name::text, m.identifier::text
            FROM passthrough.memberships m
            JOIN passthrough.identifier_types t ON t.id = m.identifier_type_id
            JOIN passthrough.external_audiences e ON e.id = m.audience_key
            WHERE e.external_id = ANY (%s)""", ([self.a, self.t],)).fetchall()
        return {(t, i, audience) for t, i in customers for (audience,) in self.conn.execute(
            "SELECT external_audience_id FROM passthrough.customer_audiences(%s, %s)", (t, i)).fetchall()
            if audience in (self.a, self.t)}

    def levels(self) -> list[int]:
        return [level for (level,) in self.conn.execute(
            "SELECT c.level FROM passthrough.membership_changes c"
            " JOIN passthrough.external_audiences e ON e.id = c.audience_key WHERE e.external_id = %s"
            " ORDER BY c.pos, c.level, c.batch_id, c.ord", (self.a,)).fetchall()]


def new_feed(conn: psycopg.Connection) -> Feed:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    feed = Feed(conn, f"{prefix}_a", f"{prefix}_t")
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.create_audience(%s, %s)", (feed.a, feed.a))
    conn.execute("SELECT passthrough.create_audience(%s, %s, p_ttl => interval '1 hour')", (feed.t, feed.t))
    return feed


@pytest.fixture
def feed(citus_url) -> Iterator[Feed]:
    with psycopg.connect(citus_url, autocommit=True) as conn:
        yield new_feed(conn)


def xid(session: Session) -> int:
    """The session's coordinator transaction id (assigned now if it had none)."""
    return int(session.run("SELECT pg_current_xact_id()::text")[0][0])


# --------------------------------------------------------------------------- forced interleavings

WRITERS = {"apply_events": apply_events, "load": load}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_an_older_transaction_replacing_a_younger_ones_committed_version_comes_after_it(citus_url, feed, writer):
    """T1 takes its id, T2 qualifies u1 and commits, T1 disqualifies u1 (later ts) and commits: the feed must
    show the entry before the exit, although T1's id is the smaller."""
    write = WRITERS[writer]
    with CitusSessions(citus_url, 2) as (old, young):
        old.start(write([feed.ev("other", True, TS)]))
        young.start(write([feed.ev("u1", True, TS + 100)]))
        assert xid(old) < xid(young)
        young.commit()
        old.start(write([feed.ev("u1", False, TS + 200)]))
        old.commit()
    assert feed.changes_of("u1") == ["entered", "exited"]
    assert members(replay(feed.read())) == feed.live_members() == {("fs_user_id", "other", feed.a)}


def test_an_older_transaction_waiting_for_a_younger_ones_row_lock_on_a_worker_comes_after_it(citus_url, feed):
    with CitusSessions(citus_url, 2) as (old, young):
        old.start(apply_events([feed.ev("other", True, TS)]))
        old_xid = xid(old)
        young.start(apply_events([feed.ev("u1", True, TS + 100)]))
        assert old_xid < xid(young)
        waiting = old.start(apply_events([feed.ev("u1", False, TS + 200)]))
        assert not waiting.done() and old.blocked()  # it waits for young's row lock on u1, on u1's worker
        young.commit()
        old.wait()
        old.commit()
    assert feed.changes_of("u1") == ["entered", "exited"]
    assert members(replay(feed.read())) == feed.live_members() == {("fs_user_id", "other", feed.a)}


def test_a_replacing_batch_numbered_before_the_replaced_one_still_comes_after_it(citus_url, feed):
    """Batch 27 (the older transaction) starts and waits, and meanwhile batch 28 (younger) writes u1 and commits;
    then batch 27 replaces u1: its change comes after 28's. On one server batch 27 waits on a row it meets before
    u1; a batch's shards run in parallel on a cluster, so here it waits before any row is written: on the lock
    of its other audience t that a snapshot import of t holds (taken here alone: the import itself also holds
    Citus's lock on the reference tables it updates, which every writer waits for, see below)."""
    key = feed.conn.execute("SELECT id FROM passthrough.external_audiences WHERE external_id = %s",
                            (feed.t,)).fetchone()[0]
    with CitusSessions(citus_url, 3) as (holder, old, young):
        holder.run("SELECT pg_advisory_xact_lock(passthrough._audience_lock_space(), %s)", (key,))
        waiting = old.start(apply_events([feed.ev("u0", False, TS + 200, feed.t), feed.ev("u1", False, TS + 200)]))
        assert not waiting.done() and old.blocked()
        young_batch = young.start(apply_events([feed.ev("u1", True, TS + 100)])).result(timeout=20)
        young_xid = xid(young)
        young.commit()
        holder.commit()
        assert old.wait() < young_batch
        assert xid(old) < young_xid
        old.commit()
    assert feed.changes_of("u1") == ["entered", "exited"]
    assert members(replay(feed.read())) == feed.live_members() == set()


def test_a_snapshot_import_holds_up_a_writer_of_its_audience_until_it_commits(citus_url, feed):
    """As on one server: a batch of the imported audience waits for the import to end (the audience's lock). The
    feed then shows the import's changes, then the batch's."""
    with CitusSessions(citus_url, 2) as (importer, writer):
        importer.start(snapshot(feed.a, TS + 50, ["u0"]))
        waiting = writer.start(apply_events([feed.ev("u1", True, TS + 100)]))
        assert not waiting.done() and writer.blocked()
        importer.commit()
        writer.wait()
        writer.commit()
    assert [(change, i, a) for _, change, _, i, a in feed.read()] == [("entered", "u0", feed.a),
                                                                     ("entered", "u1", feed.a)]


def test_a_snapshot_import_does_not_hold_up_a_writer_of_another_known_audience(citus_url, feed):
    """The import's updates of reference tables conflict with another batch's inserts into them, so a batch
    whose audience ids are all known writes none of them (sql/functions/150_writer.sql): a writer of audience t
    goes on while an import of audience a is open, as on one server."""
    feed.conn.execute(*apply_sql([feed.ev("u9", True, TS, feed.t)]))  # t's external id is known
    with CitusSessions(citus_url, 2) as (importer, writer):
        importer.start(snapshot(feed.a, TS + 50, ["u0"]))
        done = writer.start(apply_events([feed.ev("u1", True, TS + 100, feed.t)]))
        assert done.done(), "the writer of the other audience waits for the import"
        writer.wait()
        writer.commit()
        importer.commit()
    assert sorted((change, i, a) for _, change, _, i, a in feed.read()) == [
        ("entered", "u0", feed.a), ("entered", "u1", feed.t), ("entered", "u9", feed.t)]


def apply_sql(events) -> tuple[str, tuple]:
    return ("SELECT passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in events]),))


def test_a_chain_of_older_transactions_each_replacing_the_last(citus_url, feed):
    """C (youngest) qualifies, then B replaces it, then A (oldest) replaces B's: each comes after the last."""
    with CitusSessions(citus_url, 3) as (a, b, c):
        ids = [xid(s) for s in (a, b, c)]
        assert ids == sorted(ids)
        c.start(apply_events([feed.ev("u1", True, TS + 100)]))
        c.commit()
        b.start(apply_events([feed.ev("u1", False, TS + 200)]))
        b.commit()
        a.start(apply_events([feed.ev("u1", True, TS + 300)]))
        a.commit()
    assert feed.changes_of("u1") == ["entered", "exited", "entered"]
    assert feed.levels() == [0, 1, 2]  # each took over the position of the one it replaced, one level up
    assert members(replay(feed.read())) == feed.live_members() == {("fs_user_id", "u1", feed.a)}


def test_an_older_transaction_replacing_a_pair_again_in_a_later_batch_comes_after_its_first(citus_url, feed):
    """After taking over a younger transaction's position, the same transaction's next batches on that pair come
    after its first. On one server they keep its level (0, 1, 1, 1) and sort by batch; on a cluster the writer
    cannot tell its own version from another's (a worker's xmin means nothing to the coordinator), so each
    takes one level more (docs/scale-out.md): the same order."""
    with CitusSessions(citus_url, 2) as (old, young):
        assert xid(old) < xid(young)
        young.start(apply_events([feed.ev("u1", True, TS + 100)]))
        young.commit()
        old.start(apply_events([feed.ev("u1", False, TS + 200)]))
        old.start(apply_events([feed.ev("u1", True, TS + 300)]))
        old.start(apply_events([feed.ev("u1", False, TS + 400)]))
        old.commit()
    assert feed.changes_of("u1") == ["entered", "exited", "entered", "exited"]
    assert feed.levels() == [0, 1, 2, 3]


def test_a_snapshot_import_in_an_older_transaction_comes_after_what_it_replaced(citus_url, feed):
    with CitusSessions(citus_url, 2) as (old, young):
        assert xid(old) < xid(young)
        young.start(apply_events([feed.ev("u1", True, TS + 100), feed.ev("u2", True, TS + 100)]))
        young.commit()
        old.start(snapshot(feed.a, TS + 200, ["u2"]))  # u1 is not listed: out at TS + 200
        old.commit()
    assert feed.changes_of("u1") == ["entered", "exited"]
    assert members(replay(feed.read())) == feed.live_members() == {("fs_user_id", "u2", feed.a)}


def test_the_sweeper_in_an_older_transaction_records_an_expiry_after_the_entry(citus_url, feed):
    two_hours_ago = Decimal(round(time.time())) - 7200  # past the one-hour ttl on arrival
    while feed.conn.execute("SELECT passthrough.expire_memberships()").fetchone()[0] > 0:
        pass  # what earlier tests left to sweep, in the database they share
    with CitusSessions(citus_url, 2) as (sweeper, writer):
        assert xid(sweeper) < xid(writer)
        writer.start(apply_events([feed.ev("u1", True, two_hours_ago, feed.t)]))
        writer.commit()
        assert sweeper.start(expire).result() == 1
        sweeper.commit()
    assert feed.changes_of("u1", feed.t) == ["entered", "expired"]
    assert members(replay(feed.read())) == feed.live_members() == set()


def test_a_writer_in_an_older_transaction_records_the_lapse_it_finds_after_the_entry(citus_url, feed):
    now = Decimal(round(time.time()))
    with CitusSessions(citus_url, 2) as (old, young):
        assert xid(old) < xid(young)
        young.start(apply_events([feed.ev("u1", True, now - 7200, feed.t)]))
        young.commit()
        old.start(apply_events([feed.ev("u1", True, now - 600, feed.t)]))
        old.commit()
    assert feed.changes_of("u1", feed.t) == ["entered", "expired", "entered"]
    assert members(replay(feed.read())) == feed.live_members() == {("fs_user_id", "u1", feed.t)}


def test_a_reader_never_passes_a_change_that_will_sort_before_its_cursor(citus_url, feed):
    """While the older transaction that will replace u1 is open, nothing after the younger one's entry is
    readable; once it commits, the reader resumes and gets the exit once, after the entry."""
    start = feed.conn.execute("SELECT passthrough.current_change_cursor()").fetchone()[0]
    with CitusSessions(citus_url, 2) as (old, young):
        assert xid(old) < xid(young)
        young.start(apply_events([feed.ev("u1", True, TS + 100)]))
        young.commit()
        assert feed.read(start, settled=False) == []  # the older one is open: it may still write before
        old.start(apply_events([feed.ev("u1", False, TS + 200)]))
        assert feed.read(start, settled=False) == []
        old.commit()
    seen = feed.read(start)
    assert [r[1] for r in seen] == ["entered", "exited"]
    assert feed.read(seen[-1][0]) == []


# --------------------------------------------------------------------------- random scripted interleavings


@pytest.fixture(scope="module")
def quick_deadlock_detection(citus_cluster) -> Iterator[None]:
    """Deadlocks found in 50 ms rather than 1 s on every node (Citus's distributed detector runs every
    deadlock_timeout times citus.distributed_deadlock_detection_factor, 2): the scripts below meet some. Put
    back as it was at the end of the module."""
    urls = [citus_cluster.url, *citus_cluster.worker_urls()]

    def configure(statement: str) -> None:
        for url in urls:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(statement)
                conn.execute("SELECT pg_reload_conf()")

    configure("ALTER SYSTEM SET deadlock_timeout = '50ms'")
    try:
        yield
    finally:
        configure("ALTER SYSTEM RESET deadlock_timeout")


class MappedScript(Script):
    """tests/test_change_feed_order.py's Script on this test's audiences: its steps name aud-a and aud-t."""

    def __init__(self, sessions, now: Decimal, names: dict[str, str]) -> None:
        super().__init__(sessions, now)
        self.names = names

    def step(self, step_no: int, n: int, kind: str, items: list[tuple]) -> None:
        super().step(step_no, n, kind, [(i, self.names[a], q, j) for i, a, q, j in items])

    # A transaction fails as a deadlock victim, as on one server, or (on a cluster only) when it writes a
    # reference table after a statement that ran on several shards in parallel (docs/scale-out.md): both roll
    # back whole, and count as rolled back.
    def refused(self, error: BaseException) -> bool:
        return refused(error, cluster=True)


def ttl_model(events: list[Event], ttl_audience: str) -> set[tuple[str, str, str]]:
    """The model's members now: the deciding event is a qualify, and for the ttl audience less than an hour old."""
    model = MembershipModel()
    model.apply(events)
    now_us = int(time.time() * 1_000_000)
    return {(t, i, a) for (t, i, a), (ts_us, qualified) in model.state.items()
            if qualified and (a != ttl_audience or ts_us > now_us - 3600 * 1_000_000)}


@settings(max_examples=20, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(step_st, min_size=4, max_size=16))
def test_any_interleaving_replays_to_the_state_and_a_follower_misses_and_repeats_nothing(
        citus_url, quick_deadlock_detection, steps):
    """Three sessions run random steps (writes in each transport, snapshot imports, sweeps, commits and
    rollbacks) with statements left waiting on each other's locks, on the workers or the coordinator; a follower
    reads the feed from its cursor after every step. Once all have committed and the sweeper has caught up: the
    follower's changes are exactly the feed's (none missed, none twice, in the same order), the feed replayed
    pair by pair equals the live state, which equals the model of the committed events (when no snapshot was
    imported: the model does not know what an import decided)."""
    with psycopg.connect(citus_url, autocommit=True) as conn:
        feed = new_feed(conn)
        start = conn.execute("SELECT passthrough.current_change_cursor()").fetchone()[0]
        followed, cursor = [], start

        with CitusSessions(citus_url, 3) as sessions:
            script = MappedScript(sessions, Decimal(math.floor(time.time())), {"aud-a": feed.a, "aud-t": feed.t})
            for step_no, (n, kind, items) in enumerate(steps):
                script.step(step_no, n, kind, items)
                followed.extend(feed.read(cursor, settled=False))
                cursor = followed[-1][0] if followed else start
            script.finish()
        while conn.execute("SELECT passthrough.expire_memberships()").fetchone()[0] > 0:
            pass
        followed.extend(feed.read(cursor))
        whole = feed.read(start)
        assert followed == whole
        replayed = members(replay(whole))
        assert replayed == feed.live_members()
        if not script.snapshots:
            assert replayed == ttl_model(script.committed, feed.t)
