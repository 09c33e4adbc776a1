"""Retention (sql/functions/240_retention.sql): set_event_retention, prune_history, the history horizon (PT031)
and pruned feed cursors (PT032)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlhelpers import at, expect_error, now, rows, scalar
from sqlhelpers import ts_at as ts

from pyapp.db import connect

ROOT = Path(__file__).resolve().parent.parent


def apply(conn, identifier, action, minutes, audience="aud-a"):
    conn.execute("SELECT passthrough.apply_event('fs_user_id', %s, %s, %s, %s::numeric)",
                 (identifier, audience, action, at(minutes)))


def logged(conn):
    return rows(conn, "SELECT identifier, qualified, event_ts FROM passthrough.events ORDER BY identifier, event_ts, qualified")


def prune(conn, limit=50000):
    return rows(conn, "SELECT events, changes FROM passthrough.prune_history(%s)", (limit,))[0]


def members_at(conn, identifier, minutes):
    return [r[0] for r in rows(conn, "SELECT name FROM passthrough.customer_audiences_at('fs_user_id', %s, NULL, %s)",
                               (identifier, ts(minutes)))]


def setup(conn):
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    apply(conn, "u", "qualify", -300)
    apply(conn, "u", "disqualify", -240)
    apply(conn, "u", "qualify", -90)      # u's newest event before a 1 hour cutoff: kept
    apply(conn, "u", "disqualify", -30)
    apply(conn, "v", "qualify", -200)     # v's only event: kept
    apply(conn, "w", "qualify", -100)
    apply(conn, "w", "disqualify", -100)  # same ts: the disqualify decides and is kept
    apply(conn, "x", "qualify", -10)


def test_without_retention_nothing_is_pruned(conn):
    setup(conn)
    assert prune(conn) == (0, 0)
    assert len(logged(conn)) == 8
    assert scalar(conn, "SELECT history_horizon FROM passthrough.get_settings()") is None


def test_set_event_retention_validates(conn):
    err = expect_error(conn, "SELECT passthrough.set_event_retention(interval '-1 day')", sqlstate="PT010")
    assert err.detail == "field: event_retention"
    conn.execute("SELECT passthrough.set_event_retention(interval '30 days')")
    assert scalar(conn, "SELECT event_retention::text FROM passthrough.get_settings()") == "30 days"
    conn.execute("SELECT passthrough.set_event_retention(NULL)")
    assert scalar(conn, "SELECT event_retention FROM passthrough.get_settings()") is None
    expect_error(conn, "SELECT * FROM passthrough.prune_history(0)", sqlstate="PT010")


def test_pruning_keeps_each_pairs_newest_old_event_and_answers_after_the_horizon(conn):
    setup(conn)
    before = {m: {u: members_at(conn, u, m) for u in "uvwx"} for m in (-60, -45, -20, -5)}
    size_before = scalar(conn, "SELECT passthrough.audience_size_at('seg_a', %s)", (ts(-50),))
    conn.execute("SELECT passthrough.set_event_retention(interval '1 hour')")
    assert prune(conn) == (3, 0)  # u's -300 and -240, w's qualify at -100
    assert logged(conn) == [("u", True, ts(-90)), ("u", False, ts(-30)), ("v", True, ts(-200)),
                            ("w", False, ts(-100)), ("x", True, ts(-10))]
    horizon = scalar(conn, "SELECT history_horizon FROM passthrough.get_settings()")
    assert ts(-61) < horizon < ts(1)
    # every answer at or after the horizon is what it was
    assert {m: {u: members_at(conn, u, m) for u in "uvwx"} for m in (-60, -45, -20, -5) if ts(m) >= horizon} == {
        m: v for m, v in before.items() if ts(m) >= horizon}
    assert scalar(conn, "SELECT passthrough.audience_size_at('seg_a', %s)", (ts(-50),)) == size_before
    # live state is untouched
    assert scalar(conn, "SELECT size FROM passthrough.get_audience('seg_a')") == 2  # v and x
    assert prune(conn) == (0, 0)


def test_answers_before_the_horizon_say_so(conn):
    setup(conn)
    conn.execute("SELECT passthrough.set_event_retention(interval '1 hour')")
    prune(conn)
    err = expect_error(conn, "SELECT * FROM passthrough.customer_audiences_at('fs_user_id', 'u', NULL, %s)",
                       (ts(-120),), sqlstate="PT031")
    assert "history horizon" in err.message and err.detail == "field: at"
    expect_error(conn, "SELECT passthrough.audience_size_at('seg_a', %s)", (ts(-120),), sqlstate="PT031")
    err = expect_error(conn, "SELECT * FROM passthrough.audience_size_history('seg_a', %s, %s, 'hour')",
                       (ts(-180), ts(0)), sqlstate="PT031")
    assert err.detail == "field: from"


def test_pruning_works_in_chunks(conn):
    setup(conn)
    conn.execute("SELECT passthrough.set_event_retention(interval '1 hour')")
    assert prune(conn, 1) == (1, 0)
    assert prune(conn, 1) == (1, 0)
    assert prune(conn, 1) == (1, 0)
    assert prune(conn, 1) == (0, 0)
    assert len(logged(conn)) == 5


def test_feed_changes_of_old_batches_are_pruned_and_a_consumer_behind_them_is_told(conn):
    setup(conn)
    feed = rows(conn, "SELECT cursor, identifier FROM passthrough.changes(NULL, 100)")
    assert len(feed) == 8  # u in, out, in, out; v in; w in, out; x in: one batch each
    # the first four batches were received "two hours ago"
    conn.execute("UPDATE passthrough.batches SET received_at = now() - interval '2 hours' WHERE id <= "
                 "(SELECT min(id) + 3 FROM passthrough.batches)")
    old = scalar(conn, "SELECT count(*) FROM passthrough.membership_changes c JOIN passthrough.batches b "
                       "ON b.id = c.batch_id WHERE b.received_at < now() - interval '1 hour'")
    conn.execute("SELECT passthrough.set_event_retention(interval '1 hour')")
    assert prune(conn)[1] == old > 0
    kept = rows(conn, "SELECT cursor, identifier FROM passthrough.changes(NULL, 100)")
    assert kept == feed[old:]  # a new consumer starts at the oldest change kept
    err = expect_error(conn, "SELECT * FROM passthrough.changes(%s, 10)", (feed[0][0],), sqlstate="PT032")
    assert err.detail == "field: after" and "pruned" in err.message
    # a consumer at the last pruned change missed nothing
    assert rows(conn, "SELECT cursor, identifier FROM passthrough.changes(%s, 100)", (feed[old - 1][0],)) == kept


def test_pruning_does_not_wait_for_writers(conn, db_url):
    setup(conn)
    conn.execute("SELECT passthrough.set_event_retention(interval '1 hour')")
    with connect(db_url) as writer:  # an open batch touching the same pairs
        writer.execute("SELECT passthrough.apply_event('fs_user_id', 'u', 'aud-a', 'qualify', %s::numeric)", (at(-1),))
        conn.execute("SET lock_timeout = '2s'")
        assert prune(conn) == (3, 0)
        writer.commit()
    assert scalar(conn, "SELECT count(*) FROM passthrough.events") == 6


def test_the_cli_prunes(conn, db_url):
    setup(conn)
    cli = [sys.executable, "-m", "pyapp.cli", "prune", "--database-url", db_url]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "no event_retention set" in out.stdout
    conn.execute("SELECT passthrough.set_event_retention(interval '1 hour')")
    out = subprocess.run(cli, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "pruned: 3 events, 0 feed changes and 0 listed identifiers" in out.stdout


def test_snapshots_older_than_the_cutoff_go_except_each_audiences_newest(conn):
    from pyapp.ingest.staging import StagedRow, format_row
    from pyapp.ingest.snapshot import import_rows

    def snapshot(audience, minutes, listed):
        payload = "".join(format_row(n, StagedRow(type="passthrough", action="qualify", identifier_type="fs_user_id",
                                                  identifier=i, audience_id=audience))
                          for n, i in enumerate(listed, 2)).encode()
        import_rows(conn, payload, audience, at=at(minutes), force=True)

    def members(identifier, minutes):
        return [r[0] for r in rows(conn, "SELECT name FROM passthrough.customer_audiences_at('fs_user_id', %s, NULL, %s)",
                                   (identifier, ts(minutes)))]

    setup(conn)
    conn.execute("SELECT passthrough.create_audience('seg_b', 'aud-b')")
    snapshot("aud-a", -150, ["v", "y"])
    snapshot("aud-a", -120, ["y"])      # aud-a's newest before a 1 hour cutoff: kept
    snapshot("aud-a", -20, ["x", "y"])  # after the cutoff: kept
    snapshot("aud-b", -150, ["v"])      # aud-b's only snapshot: kept
    before = {m: {i: members(i, m) for i in ("u", "v", "w", "x", "y")} for m in (-50, -45, -20, -1)}
    conn.execute("SELECT passthrough.set_event_retention(interval '1 hour')")
    events, changes, listed = rows(conn, "SELECT * FROM passthrough.prune_history()")[0]
    assert listed == 2  # the first snapshot of aud-a listed 2 identifiers
    assert rows(conn, "SELECT x.external_id, round((extract(epoch FROM s.snapshot_at) - %s) / 60), count(m.*)"
                      " FROM passthrough.snapshots s JOIN passthrough.external_audiences x ON x.id = s.audience_key"
                      " LEFT JOIN passthrough.snapshot_members m ON m.snapshot_id = s.id"
                      " GROUP BY 1, 2 ORDER BY 1, 2", (now(),)) == [
        ("aud-a", -120, 1), ("aud-a", -20, 2), ("aud-b", -150, 1)]
    # every answer from the horizon on is what it was; at -50 and -45 the kept snapshots decide
    assert {m: {i: members(i, m) for i in ("u", "v", "w", "x", "y")} for m in (-50, -45, -20, -1)} == before
    assert before[-45]["y"] == ["seg_a"] and before[-45]["v"] == ["seg_b"]
