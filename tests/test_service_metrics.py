"""passthrough.service_metrics() (sql/functions/285_service_metrics.sql): the database's facts GET /metrics
reports, on known data under the test's clock (sqlhelpers.now())."""

from __future__ import annotations

import time

from sqlhelpers import at, now, ts_at


def metrics(conn) -> dict[tuple[str, str | None], float | None]:
    return {(m, w): v for m, w, v in conn.execute("SELECT metric, webhook, value FROM passthrough.service_metrics()")}


def qualify(conn, user: str, minutes: float, audience: str = "aud-a") -> None:
    conn.execute("SELECT passthrough.apply_event('fs_user_id', %s, %s, 'qualify', %s::numeric)",
                 (user, audience, at(minutes)))


def elapsed() -> float:
    """Seconds since the test started, plus the millisecond sqlhelpers.at() may round a time down by: how much
    older than the data's literal age a reading may be."""
    return time.time() - now() + 0.001


def test_on_an_empty_database(conn):
    assert metrics(conn) == {("expiry_backlog", None): 0, ("retention_last_success_age_seconds", None): None}


def test_webhook_lag_is_the_age_of_the_first_undelivered_change_it_selects(conn):
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.put_audience('seg_a', 'aud-a')")
    conn.execute("SELECT passthrough.put_audience('seg_b', 'aud-b')")
    conn.execute("SELECT passthrough.create_webhook('from-start', 'https://hooks.example.com/1', NULL, false)")
    conn.execute("SELECT passthrough.create_webhook('only-b', 'https://hooks.example.com/2', ARRAY['seg_b'], false)")
    qualify(conn, "u1", -30)
    qualify(conn, "u2", -20)
    # received 10 and 5 minutes ago: the first change in feed order is the older one
    conn.execute("UPDATE passthrough.batches SET received_at = %s WHERE id = (SELECT min(id) FROM passthrough.batches)",
                 (ts_at(-10),))
    conn.execute("UPDATE passthrough.batches SET received_at = %s WHERE id = (SELECT max(id) FROM passthrough.batches)",
                 (ts_at(-5),))
    conn.execute("SELECT passthrough.create_webhook('from-now', 'https://hooks.example.com/3')")  # caught up
    found = metrics(conn)
    assert 600 <= found["webhook_lag_seconds", "from-start"] <= 600 + elapsed()
    assert found["webhook_lag_seconds", "only-b"] == 0  # nothing of seg_b pending
    assert found["webhook_lag_seconds", "from-now"] == 0
    # seg_b gets a change received 2 minutes ago: only-b now lags by that much, paused or not
    qualify(conn, "u3", -1, audience="aud-b")
    conn.execute("UPDATE passthrough.batches SET received_at = %s WHERE id = (SELECT max(id) FROM passthrough.batches)",
                 (ts_at(-2),))
    conn.execute("SELECT passthrough.pause_webhook('only-b')")
    found = metrics(conn)
    assert 120 <= found["webhook_lag_seconds", "only-b"] <= 120 + elapsed()
    assert 600 <= found["webhook_lag_seconds", "from-start"] <= 600 + elapsed()


def test_expiry_backlog_counts_the_expired_memberships_not_swept_yet(conn):
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.put_audience('seg_a', 'aud-a')")
    conn.execute("SELECT passthrough.put_audience('seg_b', 'aud-b')")  # no ttl: nothing of it expires
    conn.execute("SELECT passthrough.set_audience_ttl('seg_a', interval '1 hour')")
    for user, minutes in (("u1", -120), ("u2", -90), ("u3", -61), ("u4", -59), ("u5", -10)):
        qualify(conn, user, minutes)
    qualify(conn, "u6", -120, audience="aud-b")
    # u2 disqualified since: nothing of it to expire
    conn.execute("SELECT passthrough.apply_event('fs_user_id', 'u2', 'aud-a', 'disqualify', %s::numeric)", (at(-80),))
    assert metrics(conn)["expiry_backlog", None] == 2  # u1, u3
    assert conn.execute("SELECT passthrough.expire_memberships()").fetchone()[0] == 2
    assert metrics(conn)["expiry_backlog", None] == 0


def test_retention_age_is_since_prune_history_last_finished_a_run(conn):
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.put_audience('seg_a', 'aud-a')")
    conn.execute("SELECT passthrough.prune_history()")  # no retention set: a run all the same
    assert 0 <= metrics(conn)["retention_last_success_age_seconds", None] <= elapsed()
    conn.execute("UPDATE passthrough.settings SET last_pruned_at = %s", (ts_at(-5),))
    conn.execute("SELECT passthrough.set_event_retention(interval '1 minute')")
    for minutes in (-60, -59, -58):  # the two older events of the pair are prunable
        qualify(conn, "u1", minutes)
    # a chunk of 1 is full: the run is not finished, the age goes on from 5 minutes
    assert conn.execute("SELECT events FROM passthrough.prune_history(1)").fetchone()[0] == 1
    assert 300 <= metrics(conn)["retention_last_success_age_seconds", None] <= 300 + elapsed()
    assert conn.execute("SELECT events FROM passthrough.prune_history(1000)").fetchone()[0] == 1
    assert 0 <= metrics(conn)["retention_last_success_age_seconds", None] <= elapsed()
