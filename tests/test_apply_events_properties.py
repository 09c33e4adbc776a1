"""Property tests: whatever the order, duplication or batching, SQL state equals the reference model."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference_model import Event, MembershipModel, dumps
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
    ),
)


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
