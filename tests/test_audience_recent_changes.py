"""passthrough.audience_recent_changes (sql/functions/215_audience_recent_changes.sql): one audience's latest
entries and exits, newest first in the order its memberships changed, on literal data; and
GET /v3/segments/{segment_id}/changes, which answers it over HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from http_helpers import check_response_is_documented
from sqlhelpers import at, expect_error, rows, ts_at

pytest_plugins = ["http_fixtures"]

TS = 1_700_000_000
RECENT = "SELECT change, identifier_type, identifier, event_ts, source FROM passthrough.audience_recent_changes(%s, %s)"


def apply(conn, identifier, audience_id, action, ts, identifier_type="fs_user_id"):
    conn.execute("SELECT passthrough.apply_event(%s, %s, %s, %s, %s::numeric)", (identifier_type, identifier, audience_id,
                                                                         action, ts))


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@pytest.fixture
def two_audiences(conn):
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    conn.execute("SELECT passthrough.create_audience('seg_b', 'aud-b')")
    return conn


def test_newest_change_first_only_the_audiences_and_only_changes(two_audiences):
    c = two_audiences
    apply(c, "u1", "aud-a", "qualify", TS)                       # entered
    apply(c, "u2", "aud-a", "qualify", TS + 10)                  # entered
    apply(c, "u1", "aud-b", "qualify", TS + 5)                   # another audience
    apply(c, "u1", "aud-a", "disqualify", TS + 20)               # exited
    apply(c, "u3@example.com", "aud-a", "qualify", TS + 30, "email")
    apply(c, "u2", "aud-a", "qualify", TS + 40)                  # still in: no change
    apply(c, "u4", "aud-a", "qualify", TS - 100)                 # late: its ts is old, the change is the newest
    assert rows(c, RECENT, ("seg_a", None)) == [
        ("entered", "fs_user_id", "u4", utc(TS - 100), "sql"),
        ("entered", "email", "u3@example.com", utc(TS + 30), "sql"),
        ("exited", "fs_user_id", "u1", utc(TS + 20), "sql"),
        ("entered", "fs_user_id", "u2", utc(TS + 10), "sql"),
        ("entered", "fs_user_id", "u1", utc(TS), "sql"),
    ]
    assert rows(c, RECENT, ("seg_a", 2)) == [
        ("entered", "fs_user_id", "u4", utc(TS - 100), "sql"),
        ("entered", "email", "u3@example.com", utc(TS + 30), "sql"),
    ]
    assert rows(c, RECENT, ("seg_b", 10)) == [("entered", "fs_user_id", "u1", utc(TS + 5), "sql")]


def test_the_default_limit_is_50_the_feeds_last_in_reverse(two_audiences):
    c = two_audiences
    events = [{"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": f"b{i:02}"},
               "data": {"audience_id": "aud-a", "ts": TS + i}} for i in range(60)]
    (batch_id,) = c.execute("SELECT batch_id FROM passthrough.apply_events(%s::jsonb, 'http')",
                            (json.dumps(events),)).fetchone()
    answered = rows(c, "SELECT identifier, source, batch_id FROM passthrough.audience_recent_changes('seg_a')")
    assert len(answered) == 50 and {(s, b) for _, s, b in answered} == {("http", batch_id)}
    # one batch's changes are ordered by the writer (not by ts): newest first is the feed's order, reversed
    feed = [i for (i,) in rows(c, "SELECT identifier FROM passthrough.changes(NULL, 100) WHERE audience = 'seg_a'")]
    assert sorted(feed) == [f"b{i:02}" for i in range(60)]
    assert [i for i, _, _ in answered] == feed[::-1][:50]


def test_an_expiry_is_a_change_at_its_real_time(conn):
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.create_audience('seg_t', 'aud-t', p_ttl => interval '1 hour')")
    apply(conn, "old", "aud-t", "qualify", at(-120))
    assert conn.execute("SELECT passthrough.expire_memberships()").fetchone()[0] == 1
    assert rows(conn, "SELECT change, identifier, event_ts FROM passthrough.audience_recent_changes('seg_t', 5)") == [
        ("expired", "old", ts_at(-60)),
        ("entered", "old", ts_at(-120)),
    ]


def test_an_audience_without_changes_has_none(two_audiences):
    assert rows(two_audiences, RECENT, ("seg_a", 1000)) == []


@pytest.mark.parametrize(("audience", "limit", "sqlstate", "message"), [
    ("seg_x", 10, "PT006", "audience 'seg_x' does not exist"),
    (None, 10, "PT006", "audience NULL does not exist"),
    ("seg_a", 0, "PT010", "limit must be between 1 and 1000, got 0"),
    ("seg_a", 1001, "PT010", "limit must be between 1 and 1000, got 1001"),
])
def test_bad_arguments_are_named(two_audiences, audience, limit, sqlstate, message):
    error = expect_error(two_audiences, RECENT, (audience, limit), sqlstate)
    assert error.message == message


# --------------------------------------------------------------------------- over HTTP


def test_http_answers_the_latest_changes_newest_first(client, enabled, private_key):
    enabled.execute("SELECT passthrough.create_audience('vip', 'crm-vip')")
    apply(enabled, "u1", "crm-vip", "qualify", TS)
    apply(enabled, "u2", "crm-vip", "qualify", TS + 60)
    apply(enabled, "u1", "crm-vip", "disqualify", TS + 120)
    response = client.get("/v3/segments/vip/changes?limit=2", headers={"x-api-key": private_key})
    assert response.status_code == 200, response.text
    check_response_is_documented(response)
    changes = response.json()["changes"]
    assert [{k: c[k] for k in ("change", "identifier_type", "identifier", "event_ts", "source")} for c in changes] == [
        {"change": "exited", "identifier_type": "fs_user_id", "identifier": "u1",
         "event_ts": "2023-11-14T22:15:20Z", "source": "sql"},
        {"change": "entered", "identifier_type": "fs_user_id", "identifier": "u2",
         "event_ts": "2023-11-14T22:14:20Z", "source": "sql"},
    ]
    assert changes[0]["batch_id"] > changes[1]["batch_id"] and changes[0]["received_at"].endswith("Z")
    assert len(client.get("/v3/segments/vip/changes", headers={"x-api-key": private_key}).json()["changes"]) == 3


@pytest.mark.parametrize(("path", "status", "code", "field"), [
    ("/v3/segments/nope/changes", 404, "audience_not_found", "audience"),
    ("/v3/segments/vip/changes?limit=0", 400, "invalid_argument", "limit"),
    ("/v3/segments/vip/changes?limit=1001", 400, "invalid_argument", "limit"),
    ("/v3/segments/vip/changes?limit=ten", 400, "invalid_argument", "limit"),
    ("/v3/segments/vip/changes?after=x", 400, "invalid_argument", "after"),
    ("/v3/segments/v%00ip/changes", 400, "invalid_input", None),  # NUL: PostgreSQL cannot store it
])
def test_http_refuses_what_it_cannot_answer(client, enabled, private_key, path, status, code, field):
    enabled.execute("SELECT passthrough.create_audience('vip', 'crm-vip')")
    response = client.get(path, headers={"x-api-key": private_key})
    assert response.status_code == status, response.text
    check_response_is_documented(response)
    assert response.json()["detail"]["code"] == code
    assert response.json()["detail"].get("field") == field
