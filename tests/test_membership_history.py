"""Membership over time (sql/functions/230_membership_history.sql): the state as of any instant, one pair's history
and sizes over time, all from the event log with the live rules, compared with the reference model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_model import Event, MembershipModel, dumps
from sqlhelpers import expect_error, reset_data, rows, scalar

BASE = Decimal(1_700_000_000)
NAMES = {"aud-a": "seg_a", "aud-b": "seg_b", "aud-c": "seg_c"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

events_strategy = st.builds(
    Event,
    identifier_type=st.sampled_from(["fs_user_id", "email"]),
    identifier=st.sampled_from(["u1", "u2", "u3"]),
    audience_id=st.sampled_from(sorted(NAMES)),
    qualified=st.booleans(),
    ts=st.one_of(
        st.integers(0, 10).map(lambda s: BASE + s * 600),  # whole 10-minute steps: ties and bucket edges
        st.integers(0, 6_000_000_000).map(lambda us: BASE + Decimal(us) / 1_000_000),
    ),
)
instants = st.one_of(st.integers(-1, 11).map(lambda s: BASE + s * 600),
                     st.integers(-600_000_000, 6_600_000_000).map(lambda us: BASE + Decimal(us) / 1_000_000))


def at(seconds: Decimal) -> datetime:
    return EPOCH + timedelta(microseconds=int(seconds * 1_000_000))


def model_at(events, seconds: Decimal) -> MembershipModel:
    model = MembershipModel()
    model.apply([e for e in events if e.ts_us <= int(seconds * 1_000_000)])
    return model


def load(conn, batches) -> None:
    reset_data(conn)
    conn.execute("SELECT passthrough.enable()")
    for ext, name in NAMES.items():
        conn.execute("SELECT passthrough.create_audience(%s, %s)", (name, ext))
    for batch in batches:
        conn.execute("SELECT passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in batch]),))


def customers(events):
    return sorted({(e.identifier_type, e.identifier) for e in events})


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(events_strategy, min_size=1, max_size=10), min_size=1, max_size=5),
       moments=st.lists(instants, min_size=1, max_size=4))
def test_point_in_time_matches_the_model_and_now_matches_the_live_state(conn, batches, moments):
    load(conn, batches)
    events = [e for batch in batches for e in batch]
    for moment in moments:
        model = model_at(events, moment)
        for identifier_type, identifier in customers(events):
            expected = sorted(NAMES[a] for t, i, a in model.qualified_pairs() if (t, i) == (identifier_type, identifier))
            got = rows(conn, "SELECT name, size FROM passthrough.customer_audiences_at(%s, %s, NULL, %s)",
                       (identifier_type, identifier, at(moment)))
            assert [n for n, _ in got] == expected
            assert {n: s for n, s in got} == {NAMES[a]: model.sizes()[a] for a in NAMES if NAMES[a] in expected}
        for ext, name in NAMES.items():
            assert scalar(conn, "SELECT passthrough.audience_size_at(%s, %s)", (name, at(moment))) == \
                model.sizes().get(ext, 0)
    later = datetime.now(UTC) + timedelta(days=2)  # after every event (ts may be up to a day ahead)
    for identifier_type, identifier in customers(events):
        live = rows(conn, "SELECT * FROM passthrough.customer_audiences(%s, %s)", (identifier_type, identifier))
        assert rows(conn, "SELECT * FROM passthrough.customer_audiences_at(%s, %s, NULL, %s)",
                    (identifier_type, identifier, later)) == live


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(events_strategy, min_size=1, max_size=10), min_size=1, max_size=4),
       start=st.integers(-2, 8), hours=st.integers(1, 3))
def test_size_history_is_exact_at_every_bucket_edge(conn, batches, start, hours):
    load(conn, batches)
    events = [e for batch in batches for e in batch]
    frm, to = BASE + start * 600, BASE + start * 600 + hours * 3600
    buckets = rows(conn, "SELECT * FROM passthrough.audience_size_history('seg_a', %s, %s, 'hour')", (at(frm), at(to)))
    assert buckets and buckets[0][0] <= at(frm) < buckets[0][1] and buckets[-1][1] >= at(to) > buckets[-1][0]
    for (b_start, b_end, size_start, entered, exited, size_end), nxt in zip(buckets, buckets[1:] + [None]):
        assert b_end - b_start == timedelta(hours=1) and b_start.minute == 0 and b_start.second == 0
        start_s, end_s = Decimal((b_start - EPOCH) // timedelta(seconds=1)), Decimal((b_end - EPOCH) // timedelta(seconds=1))
        assert size_start == model_at(events, start_s).sizes().get("aud-a", 0)
        assert size_end == model_at(events, end_s).sizes().get("aud-a", 0)
        assert size_end == size_start + entered - exited
        if nxt:
            assert nxt[0] == b_end and nxt[2] == size_end
        # entries and exits: pairs whose state differs between consecutive distinct event times in the bucket
        times = sorted({e.ts for e in events if e.audience_id == "aud-a" and start_s < e.ts <= end_s})
        moves_in = moves_out = 0
        previous = model_at(events, start_s).qualified_pairs()
        for t in times:
            now = model_at(events, t).qualified_pairs()
            moves_in += len({p for p in now - previous if p[2] == "aud-a"})
            moves_out += len({p for p in previous - now if p[2] == "aud-a"})
            previous = now
        assert (entered, exited) == (moves_in, moves_out)


def test_history_of_one_pair(conn):
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    base = int(BASE)
    for action, ts, source in [("qualify", base + 10, "http"), ("disqualify", base + 20, "sql"),
                               ("qualify", base + 5, "load"),   # late: decides only [5, 10)
                               ("qualify", base + 20, "sql"),   # tie with the disqualify: it stays out
                               ("qualify", base + 10, "sql")]:  # duplicate time of the first
        conn.execute("SELECT passthrough.apply_event('fs_user_id', 'u1', 'aud-a', %s, %s, NULL, %s)", (action, ts, source))
    conn.execute("SELECT passthrough.apply_event('fs_user_id', 'u2', 'aud-a', 'qualify', %s)", (base,))
    history = rows(conn, "SELECT extract(epoch FROM event_ts)::bigint - %s, action, qualified_after, changed, source,"
                         " received_at IS NOT NULL, batch_id FROM passthrough.membership_history('fs_user_id', 'u1', 'seg_a')",
                   (base,))
    assert [h[:6] for h in history] == [
        (5, "qualify", True, True, "load", True),
        (10, "qualify", True, False, "http", True),
        (10, "qualify", True, False, "sql", True),
        (20, "disqualify", False, True, "sql", True),
        (20, "qualify", False, True, "sql", True),
    ]
    batches = rows(conn, "SELECT id FROM passthrough.batches ORDER BY id")
    assert {h[6] for h in history} <= {b for (b,) in batches}
    expect_error(conn, "SELECT * FROM passthrough.membership_history('fs_user_id', 'u1', 'nope')", sqlstate="PT006")
    expect_error(conn, "SELECT * FROM passthrough.membership_history('nope', 'u1', 'seg_a')", sqlstate="PT003")


def test_history_shows_the_snapshots_of_the_audience(conn):
    from pyapp.ingest.staging import StagedRow, format_row
    from pyapp.ingest.snapshot import import_rows

    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    base = int(BASE)

    def snapshot(at, listed):
        payload = "".join(format_row(n, StagedRow(type="passthrough", action="qualify", identifier_type="fs_user_id",
                                                  identifier=i, audience_id="aud-a"))
                          for n, i in enumerate(listed, 2)).encode()
        import_rows(conn, payload, "aud-a", at=Decimal(at), force=True, source="nightly")

    snapshot(base - 10, ["other"])  # before u1's first input: not shown for u1
    conn.execute("SELECT passthrough.apply_event('fs_user_id', 'u1', 'aud-a', 'qualify', %s)", (base + 10,))
    snapshot(base + 20, ["other"])  # leaves u1 out
    snapshot(base + 30, ["u1"])  # lists u1: also a qualify event of u1 at T
    conn.execute("SELECT passthrough.apply_event('fs_user_id', 'u1', 'aud-a', 'disqualify', %s)", (base + 25,))
    history = rows(conn, "SELECT extract(epoch FROM event_ts)::bigint - %s, action, qualified_after, changed, source"
                         " FROM passthrough.membership_history('fs_user_id', 'u1', 'seg_a')", (base,))
    assert history == [
        (10, "qualify", True, True, "sql"),
        (20, "snapshot_disqualify", False, True, "nightly"),
        (25, "disqualify", False, False, "sql"),  # late: the snapshot at 20 had decided already
        (30, "qualify", True, True, "nightly"),
        (30, "snapshot_qualify", True, True, "nightly"),
    ]


@pytest.mark.parametrize("call, sqlstate", [
    ("passthrough.audience_size_history('seg_a', now(), now() - interval '1 hour')", "PT010"),
    ("passthrough.audience_size_history('seg_a', now() - interval '2000 hours', now())", "PT010"),
    ("passthrough.audience_size_history('seg_a', now() - interval '1 day', now(), 'week')", "PT010"),
    ("passthrough.audience_size_history('nope', now() - interval '1 day', now())", "PT006"),
    ("passthrough.audience_size_at('seg_a', 'infinity')", "PT010"),
    ("passthrough.customer_audiences_at('fs_user_id', 'u1', NULL, NULL)", "PT010"),
    ("passthrough.customer_audiences_at('email', '', NULL, now())", "PT003"),
])
def test_invalid_arguments(conn, call, sqlstate):
    conn.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    expect_error(conn, f"SELECT * FROM {call}", sqlstate=sqlstate)


def test_day_buckets_and_sizes_can_be_skipped(conn):
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    conn.execute("SELECT passthrough.apply_event('fs_user_id', 'u1', 'aud-a', 'qualify', 1700000000)")
    days = rows(conn, "SELECT bucket_start, size_at_start, entered, exited, size_at_end FROM"
                      " passthrough.audience_size_history('seg_a', '2023-11-13', '2023-11-16', 'day')")
    assert [(d.day, s0, i, o, s1) for d, s0, i, o, s1 in days] == [(13, 0, 0, 0, 0), (14, 0, 1, 0, 1), (15, 1, 0, 0, 1)]
    assert rows(conn, "SELECT name, size FROM passthrough.customer_audiences_at('fs_user_id', 'u1', NULL,"
                      " '2023-11-15', false)") == [("seg_a", None)]
