"""passthrough.audience_members (sql/functions/260_audience_members.sql): who is in an audience, now or at a time,
keyset-paged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from reference_model import Event, MembershipModel, dumps
from sqlhelpers import expect_error, rows

BASE = Decimal(1_700_000_000)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MEMBERS = "SELECT identifier_type, identifier, event_ts, cursor FROM passthrough.audience_members(%s, %s, %s, %s)"


def at(seconds) -> datetime:
    return EPOCH + timedelta(seconds=float(seconds))


@pytest.fixture
def audience(conn):
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.create_audience('vip', 'crm-vip')")
    return conn


def apply(conn, events) -> None:
    conn.execute("SELECT passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in events]),))


def test_members_by_type_and_identifier_with_the_ts_that_made_each_one(audience):
    apply(audience, [Event("fs_user_id", "u2", "crm-vip", True, BASE + 2), Event("email", "z@x", "crm-vip", True, BASE),
                     Event("fs_user_id", "u1", "crm-vip", True, BASE + 1), Event("fs_user_id", "u3", "crm-vip", True, BASE),
                     Event("fs_user_id", "u3", "crm-vip", False, BASE + 5),  # out
                     Event("fs_user_id", "u9", "crm-other", True, BASE)])  # another audience
    assert rows(audience, MEMBERS, ("vip", None, None, None)) == [  # fs_user_id was added before email
        ("fs_user_id", "u1", at(BASE + 1), "fs_user_id:u1"),
        ("fs_user_id", "u2", at(BASE + 2), "fs_user_id:u2"),
        ("email", "z@x", at(BASE), "email:z@x"),
    ]


def test_pages_follow_the_cursor_and_cover_every_member_once(audience):
    identifiers = [f"u{n:03}" for n in range(25)] + ["a:b", "é", "u 1"]  # a colon in an identifier is fine
    apply(audience, [Event("fs_user_id", i, "crm-vip", True, BASE) for i in identifiers])
    seen, after = [], None
    while True:
        page = rows(audience, MEMBERS, ("vip", None, after, 4))
        seen += [r[1] for r in page]
        if len(page) < 4:
            break
        after = page[-1][3]
    assert seen == sorted(identifiers, key=lambda s: s.encode())  # byte order (COLLATE "C"), each once


def test_at_a_past_instant_and_with_a_ttl(audience):
    audience.execute("SELECT passthrough.create_audience('brief', 'crm-brief', p_ttl => interval '10 seconds')")
    events = [Event("fs_user_id", "u1", "crm-vip", True, BASE), Event("fs_user_id", "u1", "crm-vip", False, BASE + 10),
              Event("fs_user_id", "u2", "crm-vip", True, BASE + 5),
              Event("fs_user_id", "u1", "crm-brief", True, BASE)]
    apply(audience, events)
    for t in (BASE - 1, BASE, BASE + 5, BASE + 9, BASE + 10, BASE + 11):
        model = MembershipModel()
        model.apply([e for e in events if e.ts <= t])
        expected = sorted(i for (_, i, a), (_, q) in model.state.items() if q and a == "crm-vip")
        assert [r[1] for r in rows(audience, MEMBERS, ("vip", at(t), None, None))] == expected, t
    # the ttl: u1 is in brief for 10 seconds after its qualify
    assert [r[1] for r in rows(audience, MEMBERS, ("brief", at(BASE + 9), None, None))] == ["u1"]
    assert rows(audience, MEMBERS, ("brief", at(BASE + 10), None, None)) == []
    assert rows(audience, MEMBERS, ("brief", None, None, None)) == []  # long expired now


def test_the_default_page_is_1000(audience):
    apply(audience, [Event("fs_user_id", f"u{n:04}", "crm-vip", True, BASE) for n in range(1001)])
    assert len(rows(audience, MEMBERS, ("vip", None, None, None))) == 1000
    assert len(rows(audience, MEMBERS, ("vip", None, None, 1000000))) == 1001


@pytest.mark.parametrize("args, sqlstate, field", [
    (("nope", None, None, None), "PT006", "audience"),
    (("vip", None, None, 0), "PT010", "limit"),
    (("vip", None, None, 1000001), "PT010", "limit"),
    (("vip", None, "no-colon", None), "PT010", "after"),
    (("vip", None, ":x", None), "PT010", "after"),
])
def test_invalid_arguments(audience, args, sqlstate, field):
    error = expect_error(audience, MEMBERS, args, sqlstate)
    assert error.detail == f"field: {field}"


def test_an_instant_before_the_history_horizon_is_refused(audience):
    audience.execute("SELECT passthrough.set_event_retention(interval '1 day')")
    audience.execute("SELECT passthrough.prune_history()")
    error = expect_error(audience, MEMBERS, ("vip", EPOCH + timedelta(days=365 * 40), None, None), "PT031")
    assert error.detail == "field: at"
