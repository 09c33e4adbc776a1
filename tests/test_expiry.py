"""Expiry (sql/functions/100_expiry.sql): an audience's ttl, evaluated at read time, recorded by the sweeper
(passthrough.expire_memberships) or by the writer that renews a membership, in the feed at its real time."""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from sqlhelpers import at, expect_error, rows, scalar
from sqlhelpers import ts_at as ts

from pyapp.db import connect

ROOT = Path(__file__).resolve().parent.parent


def apply(conn, identifier, action, minutes, audience="aud-a"):
    conn.execute("SELECT passthrough.apply_event('fs_user_id', %s, %s, %s, %s::numeric)",
                 (identifier, audience, action, at(minutes)))


def members(conn, identifier, audience="seg_a"):
    return [r[0] for r in rows(conn, "SELECT name FROM passthrough.customer_audiences('fs_user_id', %s, %s)",
                               (identifier, [audience]))]


def size(conn, audience="seg_a"):
    return scalar(conn, "SELECT size FROM passthrough.get_audience(%s)", (audience,))


def feed(conn):
    """The whole feed as (change, identifier, event_ts)."""
    return rows(conn, "SELECT change, identifier, event_ts FROM passthrough.changes(NULL, 10000)")


def sweep(conn) -> int:
    return scalar(conn, "SELECT passthrough.expire_memberships()")


@pytest.fixture
def ttl_conn(conn):
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    conn.execute("SELECT passthrough.set_audience_ttl('seg_a', interval '1 hour')")
    return conn


def test_a_qualify_older_than_the_ttl_no_longer_counts(ttl_conn):
    c = ttl_conn
    apply(c, "old", "qualify", -120)
    apply(c, "new", "qualify", -30)
    assert members(c, "old") == []
    assert members(c, "new") == ["seg_a"]
    assert size(c) == 1  # before any sweep: the unrecorded expiry is subtracted
    assert feed(c) == [("entered", "old", ts(-120)), ("entered", "new", ts(-30))]

    assert sweep(c) == 1
    assert size(c) == 1 and members(c, "old") == []
    assert feed(c)[-1] == ("expired", "old", ts(-60))  # at its real time: the qualify's ts + the ttl
    assert sweep(c) == 0  # recorded once
    assert scalar(c, "SELECT source FROM passthrough.changes(NULL, 10) WHERE change = 'expired'") == "expiry"


def test_a_renewal_before_the_sweep_records_the_expiry_itself(ttl_conn):
    c = ttl_conn
    apply(c, "u", "qualify", -120)
    apply(c, "u", "qualify", -10)  # the first one had expired at -60: exit, then a new entry
    assert feed(c) == [("entered", "u", ts(-120)), ("expired", "u", ts(-60)), ("entered", "u", ts(-10))]
    assert members(c, "u") == ["seg_a"] and size(c) == 1
    assert sweep(c) == 0  # its work-list row is stale now
    assert scalar(c, "SELECT count(*) FROM passthrough.membership_expiries") == 1  # the renewal's only


def test_a_late_renewal_from_before_the_expiry_extends_the_membership(ttl_conn):
    c = ttl_conn
    apply(c, "u", "qualify", -120)
    apply(c, "u", "qualify", -90)  # arrives after -60 but renewed before then: in from -120 to -30
    assert feed(c) == [("entered", "u", ts(-120))]
    assert members(c, "u") == [] and size(c) == 0
    assert sweep(c) == 1
    assert feed(c)[-1] == ("expired", "u", ts(-30))
    assert size(c) == 0


def test_a_late_disqualify_from_before_the_expiry_is_an_exit(ttl_conn):
    c = ttl_conn
    apply(c, "u", "qualify", -120)
    apply(c, "u", "disqualify", -70)
    assert feed(c) == [("entered", "u", ts(-120)), ("exited", "u", ts(-70))]
    assert sweep(c) == 0 and size(c) == 0


def test_a_renewal_within_the_ttl_is_no_change(ttl_conn):
    c = ttl_conn
    apply(c, "u", "qualify", -50)
    apply(c, "u", "qualify", -20)
    assert feed(c) == [("entered", "u", ts(-50))]
    assert sweep(c) == 0 and size(c) == 1


def test_a_renewal_after_the_sweep_is_an_entry(ttl_conn):
    c = ttl_conn
    apply(c, "u", "qualify", -120)
    assert sweep(c) == 1
    apply(c, "u", "qualify", -5)
    assert feed(c) == [("entered", "u", ts(-120)), ("expired", "u", ts(-60)), ("entered", "u", ts(-5))]
    assert size(c) == 1


def test_a_disqualify_after_an_unrecorded_expiry_is_not_a_second_exit(ttl_conn):
    c = ttl_conn
    apply(c, "u", "qualify", -120)
    apply(c, "u", "disqualify", -30)
    assert feed(c) == [("entered", "u", ts(-120)), ("expired", "u", ts(-60))]
    assert size(c) == 0 and sweep(c) == 0


def test_a_late_qualify_that_has_already_expired_enters_then_expires(ttl_conn):
    c = ttl_conn
    apply(c, "u", "qualify", -200)
    assert members(c, "u") == [] and size(c) == 0
    assert sweep(c) == 1
    assert feed(c) == [("entered", "u", ts(-200)), ("expired", "u", ts(-140))]
    assert size(c) == 0


def test_an_older_event_does_not_revive_or_expire_anything(ttl_conn):
    c = ttl_conn
    apply(c, "u", "qualify", -20)
    apply(c, "u", "qualify", -150)  # late and older: the state keeps the newer one
    apply(c, "u", "disqualify", -100)
    assert members(c, "u") == ["seg_a"] and size(c) == 1
    assert feed(c) == [("entered", "u", ts(-20))]


def test_point_in_time_history_and_size_history_apply_the_ttl(ttl_conn):
    c = ttl_conn
    apply(c, "u", "qualify", -180)
    apply(c, "u", "qualify", -100)   # renewed at -100 (the first expired at -120)
    apply(c, "v", "qualify", -170)
    apply(c, "v", "disqualify", -150)

    def at_members(minutes):
        return [r[0] for r in rows(c, "SELECT name FROM passthrough.customer_audiences_at('fs_user_id', 'u', NULL, %s)",
                                   (ts(minutes),))]

    assert at_members(-130) == ["seg_a"]
    assert at_members(-110) == []          # expired at -120, renewed at -100
    assert at_members(-50) == ["seg_a"]
    assert at_members(-30) == []           # expired at -40
    assert scalar(c, "SELECT passthrough.audience_size_at('seg_a', %s)", (ts(-160),)) == 2
    assert scalar(c, "SELECT passthrough.audience_size_at('seg_a', %s)", (ts(-140),)) == 1
    assert scalar(c, "SELECT passthrough.audience_size_at('seg_a', %s)", (ts(-110),)) == 0
    # the live answer and the point-in-time answer at now agree
    assert scalar(c, "SELECT passthrough.audience_size_at('seg_a', now())") == size(c) == 0

    history = rows(c, "SELECT event_ts, action, qualified_after, changed FROM "
                      "passthrough.membership_history('fs_user_id', 'u', 'seg_a')")
    assert history == [(ts(-180), "qualify", True, True), (ts(-120), "expire", False, True),
                       (ts(-100), "qualify", True, True), (ts(-40), "expire", False, True)]

    buckets = rows(c, "SELECT size_at_start, entered, exited, size_at_end FROM "
                      "passthrough.audience_size_history('seg_a', %s, %s, 'hour')", (ts(-200), ts(-1)))
    assert sum(b[1] for b in buckets) == 3 and sum(b[2] for b in buckets) == 3  # u twice in and out, v once
    assert buckets[-1][3] == 0
    for before, after in zip(buckets, buckets[1:]):
        assert before[3] == after[0]


def test_set_audience_ttl_validates_and_normalises(conn):
    conn.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    err = expect_error(conn, "SELECT passthrough.set_audience_ttl('seg_a', interval '-1 minute')", sqlstate="PT007")
    assert "ttl" in err.message and err.detail == "field: ttl"
    expect_error(conn, "SELECT passthrough.set_audience_ttl('seg_a', interval '0')", sqlstate="PT007")
    expect_error(conn, "SELECT passthrough.set_audience_ttl('nope', interval '1 hour')", sqlstate="PT006")
    assert scalar(conn, "SELECT passthrough.set_audience_ttl('seg_a', interval '1 day')") == 2
    assert scalar(conn, "SELECT ttl FROM passthrough.get_audience('seg_a')") == timedelta(days=1)
    assert scalar(conn, "SELECT passthrough.set_audience_ttl('seg_a', interval '24 hours')") == 2  # same: no-op
    assert scalar(conn, "SELECT ttl::text FROM passthrough.audiences") == "24:00:00"  # kept in seconds
    assert scalar(conn, "SELECT passthrough.set_audience_ttl('seg_a', NULL)") == 3
    assert scalar(conn, "SELECT ttl FROM passthrough.get_audience('seg_a')") is None
    with pytest.raises(psycopg.errors.CheckViolation):  # the table holds the rule for any writer
        conn.execute("UPDATE passthrough.audiences SET ttl = interval '1 day'")


def test_a_ttl_set_later_applies_to_existing_members_and_expiries_recorded_stay(conn):
    c = conn
    c.execute("SELECT passthrough.enable()")
    c.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    apply(c, "old", "qualify", -120)
    apply(c, "new", "qualify", -30)
    assert size(c) == 2
    c.execute("SELECT passthrough.set_audience_ttl('seg_a', interval '1 hour')")
    assert size(c) == 1 and members(c, "old") == []
    assert sweep(c) == 1
    # a longer ttl now does not bring back what was recorded as expired under the old one
    c.execute("SELECT passthrough.set_audience_ttl('seg_a', interval '3 hours')")
    assert members(c, "old") == [] and size(c) == 1
    apply(c, "other", "qualify", -90)  # expired under 1 hour, not under 3
    assert members(c, "other") == ["seg_a"] and size(c) == 2


def test_changing_the_ttl_records_what_was_due_under_the_old_one_first(conn):
    c = conn
    c.execute("SELECT passthrough.enable()")
    c.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    c.execute("SELECT passthrough.set_audience_ttl('seg_a', interval '1 hour')")
    apply(c, "u", "qualify", -90)
    c.execute("SELECT passthrough.set_audience_ttl('seg_a', NULL)")
    assert members(c, "u") == [] and size(c) == 0
    assert [r[0] for r in feed(c)] == ["entered", "expired"]


def test_relinking_and_deleting_move_the_work_list(ttl_conn):
    c = ttl_conn
    apply(c, "u", "qualify", -120, audience="aud-b")
    assert sweep(c) == 0 and size(c) == 0  # aud-b has no definition, so no ttl
    c.execute("SELECT passthrough.put_audience('seg_a', 'aud-b', p_ttl => interval '1 hour')")
    assert size(c) == 0 and members(c, "u") == []
    assert sweep(c) == 1
    c.execute("SELECT passthrough.delete_audience('seg_a')")
    assert scalar(c, "SELECT count(*) FROM passthrough.membership_expiries") == 0


def test_the_sweeper_never_waits_for_a_writer_and_the_feed_gets_each_expiry_once(ttl_conn, db_url):
    c = ttl_conn
    apply(c, "u", "qualify", -120)
    apply(c, "w", "qualify", -120)
    with connect(db_url) as writer:  # holds u's row, renewing it, not committed yet
        writer.execute("SELECT passthrough.apply_event('fs_user_id', 'u', 'aud-a', 'qualify', %s::numeric)", (at(-1),))
        c.execute("SET lock_timeout = '2s'")
        assert sweep(c) == 1  # w only; u is skipped, not waited for
        c.execute("RESET lock_timeout")
        writer.commit()
    assert sweep(c) == 0
    changes = [(r[0], r[1]) for r in feed(c)]
    assert changes.count(("expired", "u")) == 1 and changes.count(("expired", "w")) == 1
    # the writer's transaction is older than the sweep, so its changes come first in the feed
    assert [x for x in changes if x[1] == "u"] == [("entered", "u"), ("expired", "u"), ("entered", "u")]
    assert size(c) == 1


def test_a_rolled_back_writer_leaves_the_expiry_to_the_next_sweep(ttl_conn, db_url):
    c = ttl_conn
    apply(c, "u", "qualify", -120)
    with connect(db_url) as writer:
        writer.execute("SELECT passthrough.apply_event('fs_user_id', 'u', 'aud-a', 'qualify', %s::numeric)", (at(-1),))
        assert sweep(c) == 0
        writer.rollback()
    assert size(c) == 0
    assert sweep(c) == 1 and size(c) == 0


def test_expire_memberships_checks_its_limit_and_works_in_chunks(ttl_conn):
    c = ttl_conn
    expect_error(c, "SELECT passthrough.expire_memberships(0)", sqlstate="PT010")
    for i in range(5):
        apply(c, f"u{i}", "qualify", -120 - i)
    assert scalar(c, "SELECT passthrough.expire_memberships(2)") == 2
    assert scalar(c, "SELECT passthrough.expire_memberships(2)") == 2
    assert scalar(c, "SELECT passthrough.expire_memberships(2)") == 1
    assert size(c) == 0 and sum(1 for r in feed(c) if r[0] == "expired") == 5


def test_random_histories_agree_with_a_model_live_at_now_and_through_the_feed(ttl_conn):
    """Random events around the ttl boundary: live reads, reads at now, sizes and the replayed feed
    all match a model where a pair is in iff its deciding event is a qualify younger than the ttl."""
    c = ttl_conn
    rng = random.Random(8)
    users = [f"u{i}" for i in range(40)]
    # minutes chosen so that no qualify expires within 5 minutes of the test's clock
    minutes = [m for m in range(-170, 1) if not -65 <= m <= -55]
    log: dict[str, list[tuple[float, bool]]] = {u: [] for u in users}
    for step in range(300):
        u = rng.choice(users)
        m, q = rng.choice(minutes), rng.random() < 0.7
        log[u].append((m, q))
        apply(c, u, "qualify" if q else "disqualify", m)
        if step % 50 == 49:
            sweep(c)

    def model_in(u):
        if not log[u]:
            return False
        m, q = max(log[u], key=lambda e: (e[0], not e[1]))  # greatest ts; disqualify wins a tie
        return q and m > -60

    expected = {u for u in users if model_in(u)}
    live = {u for u in users if members(c, u)}
    at_now = {r[0] for r in rows(c, "SELECT u FROM unnest(%s::text[]) u WHERE EXISTS (SELECT 1 FROM "
                                    "passthrough.customer_audiences_at('fs_user_id', u, NULL, now()))", (users,))}
    assert live == expected and at_now == expected and size(c) == len(expected)

    sweep(c)
    replayed: set[str] = set()
    for change, u, _ in feed(c):
        if change == "entered":
            assert u not in replayed
            replayed.add(u)
        else:
            assert u in replayed
            replayed.discard(u)
    assert replayed == expected and size(c) == len(expected)


def test_the_cli_runs_the_sweeper(ttl_conn, db_url):
    apply(ttl_conn, "u", "qualify", -120)
    out = subprocess.run([sys.executable, "-m", "pyapp.cli", "expire", "--database-url", db_url],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "expired: 1 memberships recorded" in out.stdout
    assert [r[0] for r in feed(ttl_conn)] == ["entered", "expired"]
