"""Property tests: whatever the order, duplication or batching, SQL state equals the reference model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference_model import Event, MembershipModel, dumps, to_us
from sqlhelpers import reset_data, rows

BASE = Decimal(1_700_000_000)

# Small domains on purpose: collisions, ties and late events are the interesting cases.
events_strategy = st.builds(
    Event,
    identifier_type=st.sampled_from(["fs_user_id", "email"]),
    identifier=st.sampled_from(["u1", "u2", "u3", "Ü4", "u1 "]),
    audience_id=st.sampled_from(["aud-a", "aud-b", "aud-c"]),
    qualified=st.booleans(),
    ts=st.one_of(
        st.integers(0, 5).map(lambda s: BASE + s),  # whole seconds: many exact ties
        st.integers(0, 5_000_000).map(lambda us: BASE + Decimal(us) / 1_000_000),  # sub-second
        # below the microsecond, where the database rounds: any fraction, and exact halves (round half up)
        st.integers(0, 5_000_000_000).map(lambda ns: BASE + Decimal(ns) / 1_000_000_000),
        st.integers(0, 5_000_000).map(lambda us: BASE + (Decimal(us) + Decimal("0.5")) / 1_000_000),
    ),
)


# Seconds since the epoch as sent (JSON number text) -> the whole microseconds the database keeps: halves
# round away from zero (numeric round()), not to even, and not down.
ROUNDING = [
    ("1700000000", 1_700_000_000_000_000),
    ("1700000000.0000005", 1_700_000_000_000_001),
    ("1700000000.0000004999", 1_700_000_000_000_000),
    ("1700000000.0000025", 1_700_000_000_000_003),  # half to even would give ...002
    ("1700000000.0000035", 1_700_000_000_000_004),
    ("1700000000.0000014999999999999999999999", 1_700_000_000_000_001),
    ("1700000000.0000015000000000000000000001", 1_700_000_000_000_002),
    ("1700000000.9999995", 1_700_000_001_000_000),  # carries into the next second
    ("1700000000.99999949999999999999", 1_700_000_000_999_999),
    ("1.7000000000000005E9", 1_700_000_000_000_001),
    ("1.70000000000000049E+9", 1_700_000_000_000_000),
    ("946684800.0000005", 946_684_800_000_001),  # the earliest ts an event may carry
    # negative and tiny values: only the conversion sees them (an event's ts is on or after 2000-01-01)
    ("0.0000005", 1),
    ("0.0000004999", 0),
    ("-0.0000005", -1),
    ("-0.0000004999", 0),
    ("-0.0000025", -3),
    ("-1700000000.0000005", -1_700_000_000_000_001),
    ("-1700000000.9999995", -1_700_000_001_000_000),
]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("seconds, micros", ROUNDING, ids=[s for s, _ in ROUNDING])
def test_timestamps_round_half_up_to_the_microsecond_in_sql_and_in_the_model(conn, seconds, micros):
    assert to_us(Decimal(seconds)) == micros
    expected = EPOCH + timedelta(microseconds=micros)
    assert rows(conn, "SELECT passthrough._ts_from_seconds(%s::numeric)", (seconds,)) == [(expected,)]
    if Decimal(seconds) < 946_684_800:
        return
    # and through an event, its ts as the JSON number text it was sent as
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.apply_events(%s::jsonb)", (
        '[{"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "u1"},'
        f' "data": {{"audience_id": "aud-a", "ts": {seconds}}}}}]',))
    assert rows(conn, "SELECT event_ts FROM passthrough.memberships") == [(expected,)]


@st.composite
def delivered(draw):
    """A set of events, then how it is delivered: shuffled, some repeated, cut into batches."""
    events = draw(st.lists(events_strategy, min_size=1, max_size=40))
    repeats = draw(st.lists(st.sampled_from(events), max_size=10))
    stream = draw(st.permutations(events + repeats))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=6)))
    bounds = [0, *cuts, len(stream)]
    batches = [stream[a:b] for a, b in zip(bounds, bounds[1:]) if a < b]
    return events, batches


def sql_state(conn):
    return {
        (t, i, a): (us, q)
        for t, i, a, us, q in rows(
            conn,
            "SELECT t.name, m.identifier, x.external_id,"
            " ((extract(epoch FROM m.event_ts) * 1000000)::numeric)::bigint, m.qualified"
            " FROM passthrough.memberships m"
            " JOIN passthrough.identifier_types t ON t.id = m.identifier_type_id"
            " JOIN passthrough.external_audiences x ON x.id = m.audience_key",
        )
    }


def sql_sizes(conn):
    return {
        ext: size
        for ext, size in rows(
            conn,
            "SELECT x.external_id, passthrough._audience_size(x.id) FROM passthrough.external_audiences x",
        )
        if size
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=delivered())
def test_state_is_a_function_of_the_event_set(conn, case):
    events, batches = case
    reset_data(conn)
    conn.execute("SELECT passthrough.enable()")
    for batch in batches:
        conn.execute("SELECT passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in batch]),))
    model = MembershipModel()
    model.apply(events)
    assert sql_state(conn) == model.state
    assert sql_sizes(conn) == model.sizes()
    delivered_count = sum(map(len, batches))  # the log keeps every accepted event, duplicates too
    assert rows(
        conn,
        "SELECT (SELECT count(*) FROM passthrough.events), (SELECT sum(event_count) FROM passthrough.batches),"
        " (SELECT count(*) FROM passthrough.batches)",
    ) == [(delivered_count, delivered_count, len(batches))]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=delivered(), definitions_first=st.booleans())
def test_reads_match_the_model_whenever_the_definition_arrives(conn, case, definitions_first):
    events, batches = case
    reset_data(conn)
    conn.execute("SELECT passthrough.enable()")
    define = lambda: [  # noqa: E731
        conn.execute("SELECT passthrough.put_audience(%s, %s)", (name, ext))
        for name, ext in (("seg_a", "aud-a"), ("seg_b", "aud-b"))  # aud-c stays undefined
    ]
    if definitions_first:
        define()
    for batch in batches:
        conn.execute("SELECT passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in batch]),))
    if not definitions_first:
        define()
    model = MembershipModel()
    model.apply(events)
    names = {"aud-a": "seg_a", "aud-b": "seg_b"}
    for identifier_type, identifier in {(e.identifier_type, e.identifier) for e in events}:
        expected = sorted(
            names[a] for t, i, a in model.qualified_pairs() if (t, i) == (identifier_type, identifier) and a in names
        )
        got = rows(
            conn,
            "SELECT name FROM passthrough.customer_audiences(%s, %s)",
            (identifier_type, identifier),
        )
        assert [name for (name,) in got] == expected
    sizes = dict(rows(conn, "SELECT name, size FROM passthrough.list_audiences()"))
    assert sizes == {name: model.sizes().get(ext, 0) for ext, name in names.items()}
