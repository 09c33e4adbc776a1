"""passthrough.apply_events / apply_event: validation, all-or-nothing batches, what gets stored."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from sqlhelpers import TS, Jsonb, event, expect_error, rows, scalar, stored_counts

def apply(conn, events, *extra):
    placeholders = "".join(", %s" for _ in extra)
    return conn.execute(
        f"SELECT * FROM passthrough.apply_events(%s{placeholders})", (Jsonb(events), *extra)
    ).fetchone()


@pytest.fixture
def enabled(conn):
    conn.execute("SELECT passthrough.enable()")
    return conn


def test_disabled_after_install_refuses_events_and_stores_nothing(conn):
    assert scalar(conn, "SELECT passthrough.is_enabled()") is False
    error = expect_error(conn, "SELECT passthrough.apply_events(%s)", (Jsonb([event()]),), "PT002")
    assert error.message == "passthrough is disabled"
    assert "passthrough.enable()" in error.hint and "passthrough enable" in error.hint
    assert stored_counts(conn) == (0, 0, 0)


def test_valid_batch_is_stored_with_its_log_and_batch(enabled):
    result = apply(enabled, [event(), event(identifiers={"email": "v-1"}, data_idempotence_id="id-1")], "http")
    batch_id, accepted, ignored, changed = result
    assert (accepted, ignored, changed) == (2, 0, 2)
    assert rows(enabled, "SELECT source, event_count FROM passthrough.batches WHERE id = %s", (batch_id,)) == [
        ("http", 2)
    ]
    logged = rows(
        enabled,
        "SELECT t.name, e.identifier, x.external_id, e.qualified, extract(epoch FROM e.event_ts), e.idempotence_id"
        " FROM passthrough.events e JOIN passthrough.identifier_types t ON t.id = e.identifier_type_id"
        " JOIN passthrough.external_audiences x ON x.id = e.audience_key WHERE e.batch_id = %s ORDER BY 1",
        (batch_id,),
    )
    assert logged == [
        ("email", "v-1", "aud-1", True, TS, "id-1"),
        ("fs_user_id", "user-1", "aud-1", True, TS, None),
    ]


def test_empty_batch_stores_nothing(enabled):
    assert apply(enabled, []) == (None, 0, 0, 0)
    assert stored_counts(enabled) == (0, 0, 0)


def test_events_must_be_an_array(enabled):
    error = expect_error(enabled, "SELECT passthrough.apply_events(%s)", (Jsonb(event()),), "PT001")
    assert error.message == "events must be a JSON array of event objects, got object"


INVALID_CASES = [
    ("not an object", 5, "event: must be a JSON object, got number"),
    ("type missing", event(type=None), "type: is required"),
    ("type wrong", event(type="fullstack"), 'type: must be "passthrough", got "fullstack"'),
    ("action missing", event(action=None), "action: is required"),
    ("action wrong", event(action="qualified"), 'action: must be "qualify" or "disqualify", got "qualified"'),
    (
        "identifiers missing",
        event(identifiers=None),
        'identifiers: is required, as an object with one high-confidence identifier, e.g. {"fs_user_id": "user-1"}',
    ),
    (
        "identifiers not an object",
        event(identifiers=["fs_user_id", "u"]),
        'identifiers: is required, as an object with one high-confidence identifier, e.g. {"fs_user_id": "user-1"}',
    ),
    ("no identifier", event(identifiers={}), "identifiers: must hold exactly one high-confidence identifier, got 0 "
                                             "(low-confidence ones, such as vuid, may come with it)"),
    (
        "two high-confidence identifiers",
        event(identifiers={"fs_user_id": "u", "email": "e", "vuid": "v"}),
        "identifiers: must hold exactly one high-confidence identifier, got 2 "
        "(low-confidence ones, such as vuid, may come with it)",
    ),
    (
        "only a low-confidence identifier",
        event(identifiers={"vuid": "v"}),
        'identifiers: "vuid" is a low-confidence identifier type, and a passthrough event needs exactly one '
        'high-confidence identifier (such as fs_user_id) to key it',
    ),
    (
        "unknown identifier type",
        event(identifiers={"phone": "555"}),
        'identifiers: unknown identifier type "phone" (passthrough.list_identifier_types() lists them)',
    ),
    (
        "unknown identifier type beside a high-confidence one",
        event(identifiers={"fs_user_id": "u", "phone": "555"}),
        'identifiers: unknown identifier type "phone" (passthrough.list_identifier_types() lists them)',
    ),
    (
        "the keying identifier of several not a string",
        event(identifiers={"fs_user_id": 42, "vuid": "v"}),
        "identifiers.fs_user_id: must be a string, got number",
    ),
    ("identifier not a string", event(identifiers={"fs_user_id": 42}), "identifiers.fs_user_id: must be a string, got number"),
    ("identifier empty", event(identifiers={"fs_user_id": ""}), "identifiers.fs_user_id: must be a non-empty string"),
    ("identifier null", event(identifiers={"fs_user_id": None}), "identifiers.fs_user_id: must be a non-empty string"),
    (
        "identifier too long",
        event(identifiers={"fs_user_id": "u" * 513}),
        "identifiers.fs_user_id: must be at most 512 characters, got 513",
    ),
    ("data missing", event(data=None), "data.audience_id: is required"),
    ("data not an object", event(data="aud-1"), "data: must be an object, got string; data.audience_id: is required"),
    ("audience_id missing", event(data={"ts": TS}), "data.audience_id: is required"),
    ("audience_id not a string", event(data_audience_id=7), "data.audience_id: must be a string, got number"),
    ("audience_id empty", event(data_audience_id=""), "data.audience_id: must be a non-empty string"),
    (
        "audience_id too long",
        event(data_audience_id="a" * 256),
        "data.audience_id: must be at most 255 characters, got 256",
    ),
    ("ts a string", event(data_ts="1700000000"), "data.ts: must be a number of seconds since the Unix epoch, got string"),
    (
        "ts in milliseconds",
        event(data_ts=1_700_000_000_123),
        "data.ts: 1700000000123 looks like milliseconds, send seconds since the Unix epoch (1700000000.123)",
    ),
    (
        "ts before 2000",
        event(data_ts=12),
        "data.ts: must be seconds since the Unix epoch, on or after 2000-01-01 (946684800), got 12",
    ),
    (
        "ts far in the future",
        event(data_ts=4_000_000_000),
        "data.ts: 4000000000 is later than the server clock allows (now + max_future_skew)",
    ),
    (
        "ts in microseconds",
        event(data_ts=1_700_000_000_123_456),
        "data.ts: 1700000000123456 is later than the server clock allows (now + max_future_skew)",
    ),
    ("idempotence_id not a string", event(data_idempotence_id=1), "data.idempotence_id: must be a string, got number"),
    (
        "idempotence_id too long",
        event(data_idempotence_id="i" * 256),
        "data.idempotence_id: must be at most 255 characters, got 256",
    ),
]


@pytest.mark.parametrize("bad, message", [case[1:] for case in INVALID_CASES], ids=[c[0] for c in INVALID_CASES])
def test_each_rule_names_the_event_and_field(enabled, bad, message):
    batch = [event(identifiers={"fs_user_id": "good-0"}), bad, event(identifiers={"fs_user_id": "good-2"})]
    error = expect_error(enabled, "SELECT passthrough.apply_events(%s)", (Jsonb(batch),), "PT001")
    assert error.message == f"batch refused: 1 of 3 events invalid; event 1: {message}"
    assert [item["event"] for item in error.detail_json] == [1]
    assert error.detail_json[0]["message"] == message
    assert error.detail_json[0]["problems"] == message.split("; ")
    assert "Nothing from this batch was stored" in error.hint
    assert stored_counts(enabled) == (0, 0, 0)


@pytest.mark.parametrize("ts, message", [
    ("1e131071", "data.ts: 1.000000e+131071 is later than the server clock allows (now + max_future_skew)"),
    ("-9.5e131071", "data.ts: must be seconds since the Unix epoch, on or after 2000-01-01 (946684800), got "
                    "-9.500000e+131071"),
    ("1e-16383", "data.ts: must be seconds since the Unix epoch, on or after 2000-01-01 (946684800), got "
                 "1.000000e-16383"),
])
def test_a_ts_of_many_digits_is_named_briefly(enabled, ts, message):
    """numeric holds 131,072 digits before the point and 16,383 after: a message shows such a ts in scientific
    notation, not digit by digit."""
    batch = ('[{"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "u"}, '
             f'"data": {{"audience_id": "a", "ts": {ts}}}}}]')
    error = expect_error(enabled, "SELECT passthrough.apply_events(%s::jsonb)", (batch,), "PT001")
    assert error.detail_json == [{"event": 0, "message": message, "problems": [message]}]


def test_every_invalid_event_is_listed_and_nothing_is_stored(enabled):
    batch = [event(action="maybe"), event(), event(data_ts="x", identifiers={}), event()]
    error = expect_error(enabled, "SELECT passthrough.apply_events(%s)", (Jsonb(batch),), "PT001")
    assert error.message.startswith("batch refused: 2 of 4 events invalid; event 0: ")
    assert error.detail_json == [
        {
            "event": 0,
            "message": 'action: must be "qualify" or "disqualify", got "maybe"',
            "problems": ['action: must be "qualify" or "disqualify", got "maybe"'],
        },
        {
            "event": 2,
            "message": "data.ts: must be a number of seconds since the Unix epoch, got string; "
            "identifiers: must hold exactly one high-confidence identifier, got 0 "
            "(low-confidence ones, such as vuid, may come with it)",
            "problems": [
                "data.ts: must be a number of seconds since the Unix epoch, got string",
                "identifiers: must hold exactly one high-confidence identifier, got 0 "
                "(low-confidence ones, such as vuid, may come with it)",
            ],
        },
    ]
    assert stored_counts(enabled) == (0, 0, 0)


@pytest.mark.parametrize("spelling", ["fs_user_id", "fs-user-id", "FS_USER_ID", "Fs-User-Id"])
def test_identifier_type_spellings_are_normalised(enabled, spelling):
    apply(enabled, [event(identifiers={spelling: "user-1"})])
    assert rows(
        enabled,
        "SELECT t.name, m.identifier FROM passthrough.memberships m"
        " JOIN passthrough.identifier_types t ON t.id = m.identifier_type_id",
    ) == [("fs_user_id", "user-1")]


def test_a_low_confidence_identifier_alone_is_refused(enabled):
    enabled.execute("SELECT passthrough.add_identifier_type('cookie', false)")
    error = expect_error(
        enabled,
        "SELECT passthrough.apply_events(%s)",
        (Jsonb([event(identifiers={"cookie": "c1"})]),),
        "PT001",
    )
    assert error.detail_json[0]["message"] == (
        'identifiers: "cookie" is a low-confidence identifier type, and a passthrough event needs exactly one '
        'high-confidence identifier (such as fs_user_id) to key it'
    )


def test_low_confidence_identifiers_may_come_along_and_key_nothing(enabled):
    """What the browser and mobile SDKs send: the visitor's vuid beside the user id, on every event."""
    enabled.execute("SELECT passthrough.add_identifier_type('cookie', false)")
    result = apply(enabled, [event(identifiers={"vuid": "vuid_0a1b", "fs_user_id": "user-1", "cookie": "c1"})])
    assert result[1:] == (1, 0, 1)
    assert rows(enabled, "SELECT t.name, m.identifier, m.qualified FROM passthrough.memberships m"
                         " JOIN passthrough.identifier_types t ON t.id = m.identifier_type_id") == [
        ("fs_user_id", "user-1", True)]
    assert rows(enabled, "SELECT identifier FROM passthrough.events") == [("user-1",)]


def test_other_event_types_are_ignored_only_when_asked(enabled):
    identified = {"type": "fullstack", "action": "identified", "identifiers": {"fs_user_id": "u"}}
    expect_error(enabled, "SELECT passthrough.apply_events(%s)", (Jsonb([identified]),), "PT001")
    result = apply(enabled, [identified, event()], "http", True)
    assert result[1:] == (1, 1, 1)
    assert scalar(enabled, "SELECT count(*) FROM passthrough.events") == 1


def test_only_ignored_events_are_acknowledged_even_when_disabled(conn):
    identified = {"type": "fullstack", "action": "identified"}
    assert apply(conn, [identified, identified], "http", True) == (None, 0, 2, 0)
    expect_error(
        conn, "SELECT passthrough.apply_events(%s, 'http', true)", (Jsonb([identified, event()]),), "PT002"
    )


def test_missing_ts_means_the_transaction_time(enabled):
    enabled.execute("BEGIN")
    apply(enabled, [event(data={"audience_id": "aud-1"})])
    assert scalar(enabled, "SELECT event_ts = now() FROM passthrough.memberships") is True
    enabled.execute("COMMIT")


def test_sub_second_ts_decides_the_order(enabled):
    apply(enabled, [event(action="disqualify", data_ts=1_700_000_000.000001)])
    apply(enabled, [event(action="qualify", data_ts=1_700_000_000.000000)])
    assert rows(enabled, "SELECT qualified, extract(epoch FROM event_ts) FROM passthrough.memberships") == [
        (False, Decimal("1700000000.000001"))
    ]
    apply(enabled, [event(action="qualify", data_ts=1_700_000_000.000002)])
    assert scalar(enabled, "SELECT qualified FROM passthrough.memberships") is True


def test_future_skew_setting_bounds_ts(enabled):
    now = scalar(enabled, "SELECT extract(epoch FROM now())::bigint")
    apply(enabled, [event(data_ts=now + 120)])  # two minutes ahead is within the default five
    error = expect_error(enabled, "SELECT passthrough.apply_events(%s)", (Jsonb([event(data_ts=now + 600)]),), "PT001")
    assert "later than the server clock allows" in error.message  # ten are not
    ahead = now + 3600
    enabled.execute("SELECT passthrough.set_max_future_skew(interval '2 hours')")
    apply(enabled, [event(data_ts=ahead)])
    enabled.execute("SELECT passthrough.set_max_future_skew(interval '1 minute')")
    error = expect_error(
        enabled, "SELECT passthrough.apply_events(%s)", (Jsonb([event(data_ts=ahead + 1)]),), "PT001"
    )
    assert "later than the server clock allows" in error.message
    expect_error(enabled, "SELECT passthrough.set_max_future_skew(interval '-1 second')", sqlstate="PT010")


def test_no_skew_lets_a_ts_past_every_timestamp_through(enabled, pg_version):
    """A ts no timestamp holds is refused by name however large the skew (an infinite interval on 17+)."""
    skew = "infinity" if pg_version >= 170000 else "200000 years"
    enabled.execute(f"SELECT passthrough.set_max_future_skew(interval '{skew}')")
    apply(enabled, [event(data_ts=9_999_999_999)])  # the year 2286: allowed by that skew
    for ts, shown in ((10**14, "100000000000000"), (10**20, "100000000000000000000"),
                      (Decimal("1e131071"), "1.000000e+131071")):
        error = expect_error(enabled, "SELECT passthrough.apply_events(%s::jsonb)", (
            '[{"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "u"}, '
            f'"data": {{"audience_id": "a", "ts": {ts}}}}}]',), "PT001")
        assert error.detail_json[0]["problems"] == [
            f"data.ts: {shown} is later than the server clock allows (now + max_future_skew)"]


def test_apply_event_convenience_uses_the_same_rules(enabled):
    assert enabled.execute(
        "SELECT accepted, changed FROM passthrough.apply_event('fs_user_id', 'u1', 'aud-1', 'qualify', %s, 'idem')",
        (TS,),
    ).fetchone() == (1, 1)
    error = expect_error(
        enabled, "SELECT passthrough.apply_event('phone', 'u1', 'aud-1', 'qualify')", sqlstate="PT001"
    )
    assert json.loads(error.detail)[0]["message"].startswith('identifiers: unknown identifier type "phone"')
    error = expect_error(
        enabled, "SELECT passthrough.apply_event('fs_user_id', 'u1', 'aud-1', 'join', 1.5)", sqlstate="PT001"
    )
    assert [p for p in error.detail_json[0]["problems"]] == [
        'action: must be "qualify" or "disqualify", got "join"',
        "data.ts: must be seconds since the Unix epoch, on or after 2000-01-01 (946684800), got 1.5",
    ]


def test_changed_counts_only_state_transitions(enabled):
    assert apply(enabled, [event(action="disqualify")])[3] == 0  # absent -> not qualified: no change
    assert apply(enabled, [event(action="qualify", data_ts=TS + 1)])[3] == 1
    assert apply(enabled, [event(action="qualify", data_ts=TS + 2)])[3] == 0  # newer, same state
    assert apply(enabled, [event(action="disqualify", data_ts=TS)])[3] == 0  # late: ignored
    assert apply(enabled, [event(action="disqualify", data_ts=TS + 2)])[3] == 1  # tie: disqualify wins
