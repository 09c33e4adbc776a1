"""The SQL bulk path: passthrough.begin_load + COPY + passthrough.load_staged.

Same rules as apply_events (the validation is shared), same semantics (the writer is shared), report or
rejects for invalid rows, and the same behaviour over psycopg and pg8000.
"""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyapp.db import connect
from pyapp.ingest.formats import event_to_row
from pyapp.ingest.staging import LoadRefused, StagedRow, format_row, load_rows, stage
from reference_model import Event, MembershipModel, dumps
from sqlhelpers import TS, Jsonb, event, expect_error, reset_data, rows, scalar, stored_counts
from test_apply_events_properties import delivered, sql_sizes, sql_state


def payload_of(events) -> bytes:
    """COPY payload for events given as JSON-like dicts (or reference-model Events)."""
    lines = []
    for n, item in enumerate(events, 1):
        if isinstance(item, Event):
            item = json.loads(dumps(item.as_json()), parse_float=Decimal)  # ts exactly as written
        lines.append(format_row(n, event_to_row(item)))
    return "".join(lines).encode()


@pytest.fixture
def enabled(conn):
    conn.execute("SELECT passthrough.enable()")
    return conn


# --------------------------------------------------------------------------- semantics


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=delivered(), via_http=st.lists(st.booleans(), min_size=8, max_size=8))
def test_bulk_state_matches_the_model_and_mixes_with_apply_events(enabled, case, via_http):
    """Any delivery, each batch by bulk load or by apply_events: the state is the model's."""
    events, batches = case
    reset_data(enabled)
    for index, batch in enumerate(batches):
        if via_http[index % len(via_http)]:
            enabled.execute("SELECT passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in batch]),))
        else:
            result = load_rows(enabled, payload_of(batch))
            assert (result.accepted, result.rejected, result.ignored) == (len(batch), 0, 0)
    model = MembershipModel()
    model.apply(events)
    assert sql_state(enabled) == model.state
    assert sql_sizes(enabled) == model.sizes()
    delivered_count = sum(map(len, batches))
    assert stored_counts(enabled)[1:] == (delivered_count, len(batches))


def test_result_and_what_is_stored(enabled):
    payload = payload_of([event(), event(identifiers={"email": "v-1"}, data_idempotence_id="id-1"),
                          event(action="disqualify", data_ts=TS + 1)])
    result = load_rows(enabled, payload, source="etl")
    assert (result.accepted, result.ignored, result.rejected, result.changed) == (3, 0, 0, 1)
    assert rows(enabled, "SELECT source, event_count FROM passthrough.batches") == [("etl", 3)]
    assert rows(enabled, "SELECT identifier, qualified FROM passthrough.memberships ORDER BY 1") == [
        ("user-1", False), ("v-1", True)]
    assert scalar(enabled, "SELECT count(*) FROM passthrough.events WHERE idempotence_id = 'id-1'") == 1
    # the staging table is emptied by a successful load
    assert scalar(enabled, "SELECT count(*) FROM pg_temp.passthrough_load") == 0


def test_missing_ts_takes_the_transaction_time(enabled):
    load_rows(enabled, payload_of([event(data={"audience_id": "aud-1"})]))
    # the batch's received_at is the transaction time too (now())
    assert scalar(enabled, "SELECT m.event_ts = b.received_at FROM passthrough.memberships m,"
                           " passthrough.batches b") is True


def test_plain_sql_copy_with_default_row_numbers(enabled):
    """What an ETL job does with any driver: begin_load, COPY a subset of columns, load_staged."""
    enabled.execute("SELECT passthrough.begin_load()")
    with enabled.cursor().copy(
        "COPY pg_temp.passthrough_load (type, action, identifier_type, identifier, audience_id, ts) FROM STDIN"
    ) as copy:
        copy.write(f"passthrough\tqualify\tfs_user_id\tu1\taud-1\t{TS}\n")
        copy.write(f"passthrough\tqualify\tfs_user_id\tu2\taud-1\t{TS}000\n")
    error = expect_error(enabled, "SELECT * FROM passthrough.load_staged()", sqlstate="PT020")
    assert json.loads(error.detail)[0]["row"] == 2  # row_no counts the rows as they arrived
    assert "looks like milliseconds" in error.message
    # begin_load empties the staging table and restarts the numbering
    enabled.execute("SELECT passthrough.begin_load()")
    enabled.execute("INSERT INTO pg_temp.passthrough_load (type, action, identifier_type, identifier, audience_id)"
                    " VALUES ('passthrough', 'qualify', 'fs_user_id', 'u3', 'aud-1')")
    assert scalar(enabled, "SELECT row_no FROM pg_temp.passthrough_load") == 1
    assert rows(enabled, "SELECT accepted, rejected FROM passthrough.load_staged()") == [(1, 0)]


# --------------------------------------------------------------------------- the same rules as apply_events

INVALID_EVENTS = [
    event(type="fullstack"),
    event(type=None),
    event(action="subscribe"),
    event(action=7),
    event(identifiers={}),
    event(identifiers={"fs_user_id": "u", "email": "v"}),
    event(identifiers={"fs_user_id": "u", "email": "v", "vuid": "w"}),
    event(identifiers={"vuid": "w"}),
    event(identifiers={"vuid": "w", "cookie": "c"}),
    event(identifiers={"fs_user_id": "u", "nope": "x"}),
    event(identifiers={"fs_user_id": 12, "vuid": "w"}),
    event(identifiers={"vuid": 12, "cookie": "c"}),
    event(identifiers={"nope": "x"}),
    event(identifiers={"fs_user_id": ""}),
    event(identifiers={"fs_user_id": "x" * 513}),
    event(identifiers={"fs_user_id": 12}),
    event(identifiers="u1"),
    event(data_audience_id=None),
    event(data_audience_id=""),
    event(data_audience_id="a" * 256),
    event(data_audience_id=5),
    event(data_ts=TS * 1000),
    event(data_ts=900_000_000),
    event(data_ts=4_000_000_000),
    event(data_ts="1700000000"),
    event(data_idempotence_id="i" * 256),
    event(data_idempotence_id=3),
    event(data=[1]),
    {"type": "passthrough", "action": "qualify"},
]


def test_bulk_reports_exactly_the_problems_apply_events_reports(enabled):
    enabled.execute("INSERT INTO passthrough.identifier_types (name, high_confidence) VALUES ('cookie', false)")
    events = [*INVALID_EVENTS, event(identifiers={"cookie": "c1"}), event()]
    http = expect_error(enabled, "SELECT passthrough.apply_events(%s)", (Jsonb(events),), "PT001")
    with pytest.raises(LoadRefused) as caught:
        load_rows(enabled, payload_of(events))
    by_http = {item["event"] + 1: item["problems"] for item in http.detail_json}
    by_bulk = {item["row"]: item["problems"] for item in caught.value.invalid}
    assert by_bulk == by_http
    assert len(by_bulk) == len(events) - 1  # only the last event is valid
    assert stored_counts(enabled) == (0, 0, 0)  # nothing stored


def test_a_high_confidence_identifier_keys_the_event_and_low_confidence_ones_come_along(enabled):
    """The browser and mobile SDKs add the visitor's vuid to every event: through the bulk path too."""
    enabled.execute("SELECT passthrough.add_identifier_type('cookie', false)")
    result = load_rows(enabled, payload_of([
        event(identifiers={"vuid": "vuid_1", "fs_user_id": "user-1"}),
        event(identifiers={"cookie": "c", "email": "e@example.com", "vuid": "vuid_2"}, action="disqualify"),
    ]))
    assert (result.accepted, result.changed) == (2, 1)
    assert rows(enabled, "SELECT t.name, e.identifier, e.qualified FROM passthrough.events e"
                         " JOIN passthrough.identifier_types t ON t.id = e.identifier_type_id ORDER BY 1") == [
        ("email", "e@example.com", False), ("fs_user_id", "user-1", True)]


def test_refusal_names_rows_and_stores_nothing(enabled):
    events = [event(), event(action="nope"), event(), event(data_audience_id=None)]
    with pytest.raises(LoadRefused) as caught:
        load_rows(enabled, payload_of(events))
    error = caught.value
    assert error.message.startswith("load refused: 2 of 4 rows invalid; row 2: action: must be")
    assert [item["row"] for item in error.invalid] == [2, 4]
    assert error.invalid[1]["message"] == "data.audience_id: is required"
    assert "p_rejects => true" in error.hint
    assert stored_counts(enabled) == (0, 0, 0)


def test_refusal_detail_lists_the_first_100(enabled):
    events = [event(action="nope", identifiers={"fs_user_id": f"u{i}"}) for i in range(150)]
    with pytest.raises(LoadRefused) as caught:
        load_rows(enabled, payload_of(events))
    assert caught.value.message.startswith("load refused: 150 of 150 rows invalid")
    assert [item["row"] for item in caught.value.invalid] == list(range(1, 101))
    assert "the first 100 of the invalid rows" in caught.value.hint


def test_rejects_mode_applies_the_rest_and_keeps_the_invalid_rows(enabled):
    events = [event(), event(action="nope", identifiers={"fs_user_id": "bad"}),
              event(identifiers={"email": "v-1"}), event(data_ts="soon")]
    result = load_rows(enabled, payload_of(events), rejects=True, source="etl")
    assert (result.accepted, result.rejected, result.changed) == (2, 2, 2)
    kept = rows(enabled, "SELECT row_no, problems, action, identifier, source FROM passthrough.get_load_rejects(%s)",
                (result.load_id,))
    assert kept == [
        (2, ['action: must be "qualify" or "disqualify", got "nope"'], "nope", "bad", "etl"),
        (4, ["data.ts: must be a number of seconds since the Unix epoch, got string"], "qualify", "user-1", "etl"),
    ]
    assert stored_counts(enabled) == (2, 2, 1)
    # another load has its own id; purging removes the kept rows
    again = load_rows(enabled, payload_of([event(data_audience_id="")]), rejects=True)
    assert again.load_id != result.load_id and (again.accepted, again.rejected, again.batch_id) == (0, 1, None)
    assert scalar(enabled, "SELECT passthrough.purge_load_rejects()") == 3
    assert rows(enabled, "SELECT * FROM passthrough.get_load_rejects(%s)", (result.load_id,)) == []


def test_skip_other_types(enabled):
    events = [event(), event(type="fullstack", action="identified")]
    with pytest.raises(LoadRefused):
        load_rows(enabled, payload_of(events))
    result = load_rows(enabled, payload_of(events), skip_other_types=True)
    assert (result.accepted, result.ignored, result.rejected) == (1, 1, 0)


def test_disabled_refuses_the_load(conn):
    with pytest.raises(Exception) as caught:
        load_rows(conn, payload_of([event()]))
    assert caught.value.diag.sqlstate == "PT002"
    assert stored_counts(conn) == (0, 0, 0)


def test_load_staged_without_a_staging_table(enabled):
    error = expect_error(enabled, "SELECT passthrough.load_staged()", sqlstate="PT021")
    assert "passthrough.begin_load()" in error.hint


# --------------------------------------------------------------------------- parallel writers and new audience ids


def known_audiences(conn) -> list[str]:
    return [a for (a,) in rows(conn, "SELECT external_id FROM passthrough.external_audiences ORDER BY 1")]


def test_register_staged_audiences_registers_only_new_valid_ids_and_keeps_the_rows(enabled):
    enabled.execute("SELECT passthrough.create_audience('defined', 'crm-old')")
    stage_payload = payload_of([event(data_audience_id="crm-old"), event(data_audience_id="crm-new"),
                                event(identifiers={"fs_user_id": "u2"}, data_audience_id="crm-new"),
                                event(data_audience_id=""), event(data_audience_id="x" * 256),
                                event(action="x", data_audience_id="crm-bad-row")])
    stage(enabled, stage_payload)
    assert scalar(enabled, "SELECT passthrough.register_staged_audiences()") == 2
    # the ids the table can hold, including one from a row load_staged will refuse (an id stores no event)
    assert known_audiences(enabled) == ["crm-bad-row", "crm-new", "crm-old"]
    assert stored_counts(enabled) == (0, 0, 0)
    assert scalar(enabled, "SELECT count(*) FROM pg_temp.passthrough_load") == 6
    assert scalar(enabled, "SELECT passthrough.register_staged_audiences()") == 0


def test_register_staged_audiences_without_a_staging_table(enabled):
    error = expect_error(enabled, "SELECT passthrough.register_staged_audiences()", sqlstate="PT021")
    assert "passthrough.begin_load()" in error.hint


@pytest.mark.parametrize("register", [
    pytest.param(False, id="unregistered", marks=pytest.mark.single_node(
        "the waiting writer's lock_timeout is a setting of its coordinator session, which Citus does not pass on to"
        " the workers where it waits (docs/scale-out.md, Tests on the cluster): it would wait for good")),
    pytest.param(True, id="registered")])
def test_a_second_writer_waits_on_a_new_audience_id_unless_registered_first(db_url, conn, register):
    """Two writers, disjoint identifiers, one new audience id: without registration the second writer's
    load waits for the first writer's whole batch (here: times out); registered first, it goes through."""
    conn.execute("SELECT passthrough.enable()")
    first, second = connect(db_url), connect(db_url)
    try:
        load_rows(first, payload_of([event(identifiers={"fs_user_id": "a"}, data_audience_id="crm-new")]),
                  register_audiences=register)  # its batch stays open
        second.execute("SET lock_timeout = '1s'")
        payload = payload_of([event(identifiers={"fs_user_id": "b"}, data_audience_id="crm-new")])
        if register:
            result = load_rows(second, payload, register_audiences=True)
            second.commit()
            assert result.accepted == 1
        else:
            with pytest.raises(psycopg.errors.LockNotAvailable):
                load_rows(second, payload)
            second.rollback()
        first.commit()
    finally:
        first.close()
        second.close()
    assert rows(conn, "SELECT identifier FROM passthrough.memberships ORDER BY 1") == (
        [("a",), ("b",)] if register else [("a",)])
    assert known_audiences(conn) == ["crm-new"]


def test_a_refused_load_after_registration_stores_no_event(db_url):
    with connect(db_url) as c:
        c.execute("SELECT passthrough.enable()")
        c.commit()
        with pytest.raises(LoadRefused):
            load_rows(c, payload_of([event(data_audience_id="crm-new"), event(action="x", data_audience_id="crm-x")]),
                      register_audiences=True)
        c.rollback()
        assert stored_counts(c) == (0, 0, 0)
        # the registration was committed before the load: ids only, no event, no membership
        assert known_audiences(c) == ["crm-new", "crm-x"]


def test_a_refused_load_inside_a_transaction_leaves_nothing(db_url):
    with connect(db_url) as c:
        c.execute("SELECT passthrough.enable()")
        c.commit()
        load_rows(c, payload_of([event(identifiers={"fs_user_id": "kept"})]))
        with pytest.raises(LoadRefused):
            load_rows(c, payload_of([event(), event(action="x")]))
        c.rollback()
        assert stored_counts(c) == (0, 0, 0)


# --------------------------------------------------------------------------- pg8000


def test_pg8000_loads_refuses_and_rejects_the_same_way(db_url, conn):
    conn.execute("SELECT passthrough.enable()")
    c = connect(db_url, driver="pg8000")
    try:
        result = load_rows(c, payload_of([event(), event(identifiers={"email": "v\t1\\x"}, action="disqualify")]))
        c.commit()
        assert (result.accepted, result.changed) == (2, 1)
        with pytest.raises(LoadRefused) as caught:
            load_rows(c, payload_of([event(), event(data_ts="x")]))
        c.rollback()
        assert [item["row"] for item in caught.value.invalid] == [2]
        result = load_rows(c, payload_of([event(data_ts=TS + 1, action="disqualify"), event(data_ts="x")]),
                           rejects=True)
        c.commit()
        assert (result.accepted, result.rejected) == (1, 1)
    finally:
        c.close()
    assert rows(conn, "SELECT identifier, qualified FROM passthrough.memberships ORDER BY 1") == [
        ("user-1", False), ("v\t1\\x", False)]


def test_decimal_timestamps_convert_exactly_as_apply_events_does(enabled):
    """Sub-microsecond digits are rounded by the one SQL conversion, whatever the transport."""
    for n, ts in enumerate(["1700000000.123456", "1700000000.1234565", "1700000000.99999951", "1700000000"]):
        row = StagedRow(type="passthrough", action="qualify", identifier_type="fs_user_id", identifier=f"bulk{n}",
                        audience_id="a", ts=ts)
        load_rows(enabled, format_row(1, row).encode())
        enabled.execute("SELECT passthrough.apply_event('fs_user_id', %s, 'a', 'qualify', %s::numeric)",
                        (f"sql{n}", ts))
        got = rows(enabled, "SELECT event_ts FROM passthrough.memberships WHERE identifier IN (%s, %s)",
                   (f"bulk{n}", f"sql{n}"))
        assert len(got) == 2 and got[0] == got[1]
    assert scalar(enabled, "SELECT event_ts FROM passthrough.memberships WHERE identifier = 'bulk0'") == scalar(
        enabled, "SELECT timestamptz '2023-11-14 22:13:20.123456+00'")


def test_plainly_valid_never_passes_a_row_with_problems(enabled):
    # load_staged skips _event_problems for the rows _event_plainly_valid passes: it must be a sufficient test
    passed, wrongly = enabled.execute("""
        WITH cases AS (
          SELECT passthrough._event_plainly_valid(p.problems, ty.type, ac.action, ic.n, hc.high, id.identifier,
                                                  au.audience, ts.ts, 1800000000, ip.idem) AS plainly,
                 cardinality(coalesce(p.problems, '{}')
                             || passthrough._event_problems(ty.type, ac.action, ic.n, 'fs_user_id', hc.high,
                                                            id.identifier, au.audience, ts.ts, 1800000000,
                                                            ip.idem)) AS problems
          FROM (VALUES (NULL::text[]), ('{}'::text[]), ('{"x: bad"}'::text[])) AS p(problems)
          CROSS JOIN unnest(ARRAY[NULL, 'passthrough', 'other', '']) AS ty(type)
          CROSS JOIN unnest(ARRAY[NULL, 'qualify', 'disqualify', 'Qualify', '']) AS ac(action)
          CROSS JOIN unnest(ARRAY[NULL, 0, 1, 2]) AS ic(n)
          CROSS JOIN unnest(ARRAY[NULL, true, false]) AS hc(high)
          CROSS JOIN unnest(ARRAY[NULL, '', 'u', repeat('u', 512), repeat('u', 513)]) AS id(identifier)
          CROSS JOIN unnest(ARRAY[NULL, '', 'a', repeat('a', 255), repeat('a', 256)]) AS au(audience)
          CROSS JOIN unnest(ARRAY[NULL, 946684799.999999, 946684800, 1700000000.5, 1800000000,
                                  1800000000.000001, 99999999999.999999, 100000000000]::numeric[]) AS ts(ts)
          CROSS JOIN unnest(ARRAY[NULL, '', repeat('i', 255), repeat('i', 256)]) AS ip(idem)
        )
        SELECT count(*) FILTER (WHERE plainly), count(*) FILTER (WHERE plainly AND problems > 0) FROM cases
    """).fetchone()
    assert passed > 0
    assert wrongly == 0
