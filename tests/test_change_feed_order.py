"""The change feed's order (sql/functions/210_change_feed.sql): applied in cursor order, the feed reproduces every pair's
state, whatever order concurrent writers (events, bulk loads, snapshot imports, the expiry sweeper) took
their transaction ids, wrote and committed in. Interleavings are forced (tests/interleave.py), never hoped for."""

from __future__ import annotations

import math
import time
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from citus_cluster import on_citus
from interleave import Session, Sessions
from reference_model import Event, MembershipModel, dumps
from sqlhelpers import reset_data, rows, scalar

from pyapp.ingest.staging import StagedRow, format_row, load_rows
from pyapp.ingest.snapshot import import_rows

TS = Decimal(1_700_000_000)
TTL_AUDIENCE = "aud-t"  # its definition has a one-hour ttl
FEED = "SELECT cursor, change, identifier_type, identifier, audience_id FROM passthrough.changes(%s, %s)"


@pytest.fixture
def feed_db(conn):
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    conn.execute("SELECT passthrough.create_audience('seg_t', %s, p_ttl => interval '1 hour')", (TTL_AUDIENCE,))
    return conn


# --------------------------------------------------------------------------- writing, in each transport


def ev(identifier: str, qualified: bool, ts: Decimal, audience: str = "aud-a") -> Event:
    return Event("fs_user_id", identifier, audience, qualified, ts)


def apply_events(events):
    """The HTTP path's SQL call, in the session's transaction."""
    return lambda c: c.execute("SELECT batch_id FROM passthrough.apply_events(%s::jsonb)",
                               (dumps([e.as_json() for e in events]),)).fetchone()[0]


def load(events):
    """The bulk path (COPY -> load_staged) as `passthrough load` calls it."""
    payload = "".join(
        format_row(n, StagedRow(type="passthrough", action="qualify" if e.qualified else "disqualify",
                                identifier_type=e.identifier_type, identifier=e.identifier,
                                audience_id=e.audience_id, ts=str(e.ts)))
        for n, e in enumerate(events, 1)).encode()
    return lambda c: load_rows(c, payload).batch_id


def snapshot(audience: str, at: Decimal, listed: list[str]):
    """A snapshot import (the full list of `audience` at `at`) as `passthrough import` calls it."""
    payload = "".join(
        format_row(n, StagedRow(type="passthrough", action="qualify", identifier_type="fs_user_id",
                                identifier=i, audience_id=audience))
        for n, i in enumerate(listed, 1)).encode()
    return lambda c: import_rows(c, payload, audience, at=at, force=True).batch_id


def expire(c):
    return c.execute("SELECT passthrough.expire_memberships()").fetchone()[0]


def xid(session: Session) -> int:
    """The session's transaction id (assigned now if it had none)."""
    return int(session.run("SELECT pg_current_xact_id()::text")[0][0])


# --------------------------------------------------------------------------- reading the result


def read_feed(conn, limit: int = 7, settled: bool = True) -> list[tuple]:
    """The whole feed, page by page (small pages, so that resuming is exercised too). settled: first wait until
    no committed change waits behind a transaction still open anywhere on the server (autovacuum's ANALYZE
    takes a transaction id too), as a follower would; else only what is readable now."""
    deadline = time.monotonic() + 30
    while settled and scalar(conn, "SELECT passthrough.changes_pending()"):
        assert time.monotonic() < deadline, "the feed is held back for good"
        time.sleep(0.01)
    out, after = [], None
    while True:
        page = rows(conn, FEED, (after, limit))
        out += page
        if len(page) < limit:
            return out
        after = page[-1][0]


def replay(changes) -> dict[tuple[str, str, str], list[str]]:
    """Per pair, its changes in feed order; each must move the pair (never a second entry or exit in a row)."""
    by_pair: dict[tuple[str, str, str], list[str]] = {}
    for _, change, identifier_type, identifier, audience_id in changes:
        seen = by_pair.setdefault((identifier_type, identifier, audience_id), [])
        was_in = bool(seen) and seen[-1] == "entered"
        assert was_in != (change == "entered"), (identifier, audience_id, seen, change)
        seen.append(change)
    return by_pair


def members(by_pair) -> set[tuple[str, str, str]]:
    return {pair for pair, seen in by_pair.items() if seen[-1] == "entered"}


def live_members(conn) -> set[tuple[str, str, str]]:
    """Who is in which (defined) audience now, through the public read (expiry evaluated at read time). One
    read per customer, as a client makes it (on Citus a read called per row of a distributed table's query
    would run on the shards, where Citus refuses its own queries)."""
    customers = rows(conn, "SELECT DISTINCT t.name::text, m.identifier::text FROM passthrough.memberships m"
                           " JOIN passthrough.identifier_types t ON t.id = m.identifier_type_id")
    return {(t, i, audience) for t, i in customers
            for (audience,) in rows(conn, "SELECT external_audience_id FROM passthrough.customer_audiences(%s, %s)",
                                    (t, i))}


def sweep(conn) -> None:
    while expire(conn) > 0:
        pass


def changes_of(conn, identifier: str, audience: str = "aud-a") -> list[str]:
    return replay(read_feed(conn)).get(("fs_user_id", identifier, audience), [])


# --------------------------------------------------------------------------- forced interleavings

WRITERS = {"apply_events": apply_events, "load": load}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_an_older_transaction_replacing_a_younger_ones_committed_version_comes_after_it(db_url, feed_db, writer):
    """T1 takes its id, T2 qualifies u1 and commits, T1 disqualifies u1 (later ts) and commits: the feed must
    show the entry before the exit, although T1's id is the smaller (sorted by id, u1 ended 'in')."""
    write = WRITERS[writer]
    with Sessions(db_url, 2) as (old, young):
        old.start(write([ev("other", True, TS)]))
        young.start(write([ev("u1", True, TS + 100)]))
        assert xid(old) < xid(young)
        young.commit()
        old.start(write([ev("u1", False, TS + 200)]))
        old.commit()
    assert changes_of(feed_db, "u1") == ["entered", "exited"]
    assert members(replay(read_feed(feed_db))) == live_members(feed_db) == {("fs_user_id", "other", "aud-a")}


def test_an_older_transaction_waiting_for_a_younger_ones_row_lock_comes_after_it(db_url, feed_db):
    with Sessions(db_url, 2) as (old, young):
        old.start(apply_events([ev("other", True, TS)]))
        old_xid = xid(old)
        young.start(apply_events([ev("u1", True, TS + 100)]))
        assert old_xid < xid(young)
        waiting = old.start(apply_events([ev("u1", False, TS + 200)]))
        assert not waiting.done() and old.blocked()  # it waits for young's row lock on u1
        young.commit()
        old.wait()
        old.commit()
    assert changes_of(feed_db, "u1") == ["entered", "exited"]
    assert members(replay(read_feed(feed_db))) == live_members(feed_db)


def test_a_replacing_batch_numbered_before_the_replaced_one_still_comes_after_it(db_url, feed_db):
    """The reported case: batch 27 (the older transaction) starts, waits on another row, and meanwhile batch 28
    (younger) writes u1 and commits; then batch 27 replaces u1. Keyed by the younger id alone, the two changes
    would still sort by batch, 27 before 28: the level puts 27's after."""
    with Sessions(db_url, 3) as (holder, old, young):
        holder.start(apply_events([ev("u0", True, TS + 100)]))  # holds u0, which old's batch meets first
        waiting = old.start(apply_events([ev("u0", False, TS + 200), ev("u1", False, TS + 200)]))
        assert not waiting.done()
        young_batch = young.start(apply_events([ev("u1", True, TS + 100)])).result()
        young_xid = xid(young)
        young.commit()
        holder.commit()
        assert old.wait() < young_batch
        assert xid(old) < young_xid
        old.commit()
    assert changes_of(feed_db, "u1") == ["entered", "exited"]
    assert changes_of(feed_db, "u0") == ["entered", "exited"]
    assert members(replay(read_feed(feed_db))) == live_members(feed_db) == set()


def test_a_chain_of_older_transactions_each_replacing_the_last(db_url, feed_db):
    """C (youngest) qualifies, then B replaces it, then A (oldest) replaces B's: each comes after the last."""
    with Sessions(db_url, 3) as (a, b, c):
        ids = [xid(s) for s in (a, b, c)]
        assert ids == sorted(ids)
        c.start(apply_events([ev("u1", True, TS + 100)]))
        c.commit()
        b.start(apply_events([ev("u1", False, TS + 200)]))
        b.commit()
        a.start(apply_events([ev("u1", True, TS + 300)]))
        a.commit()
    assert changes_of(feed_db, "u1") == ["entered", "exited", "entered"]
    # in the order they happened (sorted by transaction id the three would alternate too, backwards)
    assert [int(ts) - TS for (ts,) in rows(feed_db, "SELECT extract(epoch FROM event_ts) FROM passthrough.changes()")
            ] == [100, 200, 300]
    assert members(replay(read_feed(feed_db))) == live_members(feed_db) == {("fs_user_id", "u1", "aud-a")}


@pytest.mark.single_node("on Citus a version written over one the same transaction wrote in an earlier batch takes"
                         " level + 1 instead of keeping its level (docs/scale-out.md, The writer on Citus)")
def test_an_older_transaction_replacing_a_pair_again_in_a_later_batch_keeps_its_place(db_url, feed_db):
    """After taking over a younger transaction's position, the same transaction's next batch on that pair
    sorts after its first by batch: its level does not grow again (levels grow once per transaction)."""
    with Sessions(db_url, 2) as (old, young):
        assert xid(old) < xid(young)
        young.start(apply_events([ev("u1", True, TS + 100)]))
        young.commit()
        old.start(apply_events([ev("u1", False, TS + 200)]))
        old.start(apply_events([ev("u1", True, TS + 300)]))
        old.start(apply_events([ev("u1", False, TS + 400)]))
        old.commit()
    assert changes_of(feed_db, "u1") == ["entered", "exited", "entered", "exited"]
    assert rows(feed_db, "SELECT level FROM passthrough.membership_changes ORDER BY pos, level, batch_id, ord") == [
        (0,), (1,), (1,), (1,)]


def test_a_snapshot_import_in_an_older_transaction_comes_after_what_it_replaced(db_url, feed_db):
    with Sessions(db_url, 2) as (old, young):
        assert xid(old) < xid(young)
        young.start(apply_events([ev("u1", True, TS + 100), ev("u2", True, TS + 100)]))
        young.commit()
        old.start(snapshot("aud-a", TS + 200, ["u2"]))  # u1 is not listed: out at TS + 200
        old.commit()
    assert changes_of(feed_db, "u1") == ["entered", "exited"]
    assert members(replay(read_feed(feed_db))) == live_members(feed_db) == {("fs_user_id", "u2", "aud-a")}


def test_the_sweeper_in_an_older_transaction_records_an_expiry_after_the_entry(db_url, feed_db):
    two_hours_ago = Decimal(round(time.time())) - 7200  # past the one-hour ttl on arrival
    with Sessions(db_url, 2) as (sweeper, writer):
        assert xid(sweeper) < xid(writer)
        writer.start(apply_events([ev("u1", True, two_hours_ago, TTL_AUDIENCE)]))
        writer.commit()
        assert sweeper.start(expire).result() == 1
        sweeper.commit()
    assert changes_of(feed_db, "u1", TTL_AUDIENCE) == ["entered", "expired"]
    assert members(replay(read_feed(feed_db))) == live_members(feed_db) == set()


def test_a_writer_in_an_older_transaction_records_the_lapse_it_finds_after_the_entry(db_url, feed_db):
    """The renewing writer records the unswept expiry itself, then the new entry: both after the old entry."""
    now = Decimal(round(time.time()))
    with Sessions(db_url, 2) as (old, young):
        assert xid(old) < xid(young)
        young.start(apply_events([ev("u1", True, now - 7200, TTL_AUDIENCE)]))
        young.commit()
        old.start(apply_events([ev("u1", True, now - 600, TTL_AUDIENCE)]))
        old.commit()
    assert changes_of(feed_db, "u1", TTL_AUDIENCE) == ["entered", "expired", "entered"]
    assert members(replay(read_feed(feed_db))) == live_members(feed_db) == {("fs_user_id", "u1", TTL_AUDIENCE)}


def test_a_reader_never_passes_a_change_that_will_sort_before_its_cursor(db_url, feed_db):
    """While the older transaction that will replace u1 is open, nothing after the younger one's entry is
    readable; once it commits, the reader resumes and gets the exit once, after the entry."""
    with Sessions(db_url, 2) as (old, young):
        assert xid(old) < xid(young)
        young.start(apply_events([ev("u1", True, TS + 100)]))
        young.commit()
        assert read_feed(feed_db, settled=False) == []  # the older one is open: it may still write before
        old.start(apply_events([ev("u1", False, TS + 200)]))
        assert read_feed(feed_db, settled=False) == []
        old.commit()
    seen = read_feed(feed_db)
    assert [r[1] for r in seen] == ["entered", "exited"]
    assert rows(feed_db, FEED, (seen[-1][0], 10)) == []


def test_restart_change_feed_after_a_restore_into_another_cluster(feed_db):
    """A restore into another cluster brings back positions above the new transaction counter: new changes
    would stay unreadable. restart_change_feed() empties the feed and resets them."""
    feed_db.execute("SELECT passthrough.apply_event('fs_user_id', 'u1', 'aud-a', 'qualify', %s)", (TS,))
    ahead = int(scalar(feed_db, "SELECT pg_current_xact_id()::text")) + 1_000_000_000
    feed_db.execute("UPDATE passthrough.memberships SET feed_pos = %s::text::xid8", (str(ahead),))
    feed_db.execute("UPDATE passthrough.membership_changes SET pos = %s::text::xid8", (str(ahead),))
    feed_db.execute("SELECT passthrough.apply_event('fs_user_id', 'u1', 'aud-a', 'disqualify', %s)", (TS + 1,))
    assert read_feed(feed_db, settled=False) == []  # what a restored database would show
    assert scalar(feed_db, "SELECT passthrough.restart_change_feed()") == 2
    assert read_feed(feed_db) == []
    feed_db.execute("SELECT passthrough.apply_event('fs_user_id', 'u1', 'aud-a', 'qualify', %s)", (TS + 2,))
    assert [r[1] for r in read_feed(feed_db)] == ["entered"]
    # the counter read first: on Citus a function in a query of memberships runs on the workers, whose
    # transaction ids are their own, while positions are the coordinator's (docs/scale-out.md, The writer on Citus)
    counter = scalar(feed_db, "SELECT pg_current_xact_id()::text")
    assert scalar(feed_db, "SELECT count(*) FROM passthrough.memberships WHERE feed_pos > %s::text::xid8",
                  (counter,)) == 0


# --------------------------------------------------------------------------- random scripted interleavings

# Event times: step n writes at now - 150 min + 5 min * (n + a jitter of -2 to 2), so that later steps mostly
# replace earlier ones (what makes an older transaction replace a younger one's version), with ties and
# events out of order too. The ttl (one hour) has run out on arrival for the first steps' events. "now" is
# taken when each example starts, rounded down (never ahead of the server's clock), so that no event's expiry
# falls within the minutes the example runs for, however long earlier examples or tests took.
USERS = ["u1", "u2"]
AUDIENCES = ["aud-a", TTL_AUDIENCE]
KINDS = ["apply_events"] * 3 + ["load"] * 2 + ["snapshot", "expire", "commit", "commit", "rollback"]


def refused(error: BaseException, cluster: bool | None = None) -> bool:
    """An error that rolls a session's transaction back whole, as the script expects: a deadlock, and on a Citus
    cluster (``cluster``; by default when the suite runs on one) a write of a reference table after a multi-shard
    statement in the same transaction (e.g. a sweep, then an import), which Citus refuses (docs/scale-out.md, The
    change feed on Citus)."""
    if isinstance(error, psycopg.errors.DeadlockDetected):
        return True
    return (on_citus() if cluster is None else cluster) and isinstance(error, psycopg.errors.InternalError_) \
        and "because there was a parallel operation on a distributed table" in str(error)


def step_ts(now: Decimal, step_no: int, jitter: int) -> Decimal:
    return now + (-150 + 5 * (step_no + jitter)) * 60


step_st = st.tuples(
    st.integers(0, 2),  # which session
    st.sampled_from(KINDS),
    st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from(AUDIENCES), st.booleans(), st.integers(-2, 2)),
             min_size=1, max_size=3),  # a write's events; a snapshot's members, audience and time from them
)


class Script:
    """Runs steps on sessions; a step for a session still waiting on a lock is skipped. Tracks which
    transactions committed with which events (a transaction that failed, e.g. as a deadlock victim, counts
    as rolled back)."""

    def __init__(self, sessions: list[Session], now: Decimal) -> None:
        self.sessions = sessions
        self.now = now
        self.open_events: list[list[Event]] = [[] for _ in sessions]
        self.committed: list[Event] = []
        self.snapshots = False
        self.failed = [False] * len(sessions)

    def step(self, step_no: int, n: int, kind: str, items: list[tuple]) -> None:
        session = self.sessions[n]
        if session.pending is not None and not session.pending.done():
            return
        self._collect(n)
        if kind in ("commit", "rollback"):
            self.end(n, kind)
            return
        if self.failed[n]:
            return  # the transaction is aborted until it ends
        if kind in WRITERS:
            events = [Event("fs_user_id", i, a, q, step_ts(self.now, step_no, j)) for i, a, q, j in items]
            session.start(WRITERS[kind](events))
            self.open_events[n] += events
        elif kind == "snapshot":
            self.snapshots = True
            listed = sorted({i for i, _, q, _ in items if q})
            session.start(snapshot(items[0][1], step_ts(self.now, step_no, items[0][3]), listed))
        else:
            session.start(expire)

    def refused(self, error: BaseException) -> bool:
        """Whether the error rolls its transaction back as the script expects (it then counts as rolled back)."""
        return refused(error)

    def _collect(self, n: int) -> None:
        pending = self.sessions[n].pending
        if pending is not None and pending.done() and pending.exception() is not None:
            error = pending.exception()
            assert self.refused(error), error
            self.failed[n] = True
        if pending is not None and pending.done():
            self.sessions[n].pending = None

    def end(self, n: int, how: str) -> None:
        session = self.sessions[n]
        if session.pending is not None:
            try:
                session.wait()
            except psycopg.Error as error:
                assert self.refused(error), error
                self.failed[n] = True
            session.pending = None
        if how == "commit" and not self.failed[n]:
            session.commit()
            self.committed += self.open_events[n]
        else:
            session.rollback()
        self.open_events[n] = []
        self.failed[n] = False

    def finish(self) -> None:
        """Commit every session: idle ones first, which frees those waiting on them."""
        deadline = time.monotonic() + 30
        while any(s.pending is not None or self.open_events[n] or self.failed[n]
                  for n, s in enumerate(self.sessions)):
            progressed = False
            for n, session in enumerate(self.sessions):
                self._collect(n)
                if session.pending is None:
                    self.end(n, "commit")
                    progressed = True
            if not progressed:
                assert time.monotonic() < deadline, "sessions waiting on each other for good"
                time.sleep(0.01)
        for n in range(len(self.sessions)):
            self.end(n, "commit")  # a transaction that only read or swept


def ttl_model(events: list[Event]) -> set[tuple[str, str, str]]:
    """The model's members now: the deciding event is a qualify, and for the ttl audience less than an hour old."""
    model = MembershipModel()
    model.apply(events)
    now_us = int(time.time() * 1_000_000)
    return {(t, i, a) for (t, i, a), (ts_us, qualified) in model.state.items()
            if qualified and (a != TTL_AUDIENCE or ts_us > now_us - 3600 * 1_000_000)}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step_st, min_size=1, max_size=24))
def test_any_interleaving_replays_to_the_state(db_url, feed_db, steps):
    """Three sessions run random steps (writes in each transport, snapshot imports, sweeps, commits and
    rollbacks) with statements left waiting on each other's locks; once all have committed and the sweeper
    has caught up, the feed replayed pair by pair equals the live state, which equals the model of the
    committed events (when no snapshot was imported: the model does not know what an import decided)."""
    reset_data(feed_db)
    feed_db.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    feed_db.execute("SELECT passthrough.create_audience('seg_t', %s, p_ttl => interval '1 hour')", (TTL_AUDIENCE,))
    with Sessions(db_url, 3) as sessions:
        for session in sessions:
            session.run("SET deadlock_timeout = '20ms'")
            session.commit()
        script = Script(sessions, Decimal(math.floor(time.time())))
        for step_no, (n, kind, items) in enumerate(steps):
            script.step(step_no, n, kind, items)
        script.finish()
    sweep(feed_db)
    replayed = members(replay(read_feed(feed_db)))
    assert replayed == live_members(feed_db)
    if not script.snapshots:
        assert replayed == ttl_model(script.committed)
