"""passthrough.audience_member_lines (sql/functions/260_audience_members.sql): the export as text, in blocks of lines, for
passthrough export (snapshot rows) and GET /v3/segments/{id}/members (NDJSON, CSV)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from reference_model import Event, dumps
from sqlhelpers import expect_error, rows

BASE = Decimal(1_700_000_000)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LINES = ("SELECT members, lines, next_after FROM passthrough.audience_member_lines(%s, %s, %s, %s, %s, %s)")


@pytest.fixture
def audience(conn):
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.create_audience('vip', 'crm,vip')")  # a comma: the snapshot rows quote it
    return conn


def apply(conn, events) -> None:
    conn.execute("SELECT passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in events]),))


def text(conn, *args) -> str:
    return "".join(r[1] for r in rows(conn, LINES, args))


@pytest.fixture
def three(audience):
    apply(audience, [Event("fs_user_id", 'q"\\', "crm,vip", True, BASE + Decimal("0.5")),
                     Event("fs_user_id", "a,b", "crm,vip", True, BASE + 1),
                     Event("email", "z@x", "crm,vip", True, BASE),
                     Event("fs_user_id", "gone", "crm,vip", True, BASE),
                     Event("fs_user_id", "gone", "crm,vip", False, BASE + 2)])
    return audience


def test_each_format_writes_the_members_in_order(three):
    # fs_user_id before email (the order the types were added), then identifier bytes ('a' < 'q')
    assert text(three, "vip", "csv", None, None, None, None) == (
        'fs_user_id,"a,b",1700000001\n'
        'fs_user_id,"q""\\",1700000000.5\n'
        "email,z@x,1700000000\n")
    assert text(three, "vip", "ndjson", None, None, None, None) == (
        '{"identifier_type":"fs_user_id","identifier":"a,b","ts":1700000001}\n'
        '{"identifier_type":"fs_user_id","identifier":"q\\"\\\\","ts":1700000000.5}\n'
        '{"identifier_type":"email","identifier":"z@x","ts":1700000000}\n')
    assert text(three, "vip", "snapshot", None, None, None, "fs_user_id") == (
        'passthrough,qualify,"crm,vip",1700000001,"a,b"\n'
        'passthrough,qualify,"crm,vip",1700000000.5,"q""\\"\n')
    assert text(three, "vip", "snapshot", None, None, None, "email") == (
        'passthrough,qualify,"crm,vip",1700000000,z@x\n')


def test_at_a_past_instant(three):
    # at BASE + 1.5: "gone" was still in, "a,b" had qualified at BASE + 1
    assert text(three, "vip", "csv", EPOCH + timedelta(seconds=float(BASE) + 1.5), None, None, None) == (
        'fs_user_id,"a,b",1700000001\n'
        "fs_user_id,gone,1700000000\n"
        'fs_user_id,"q""\\",1700000000.5\n'
        "email,z@x,1700000000\n")


@pytest.mark.parametrize("at", [None, EPOCH + timedelta(seconds=float(BASE) + 100)])
def test_pages_name_the_next_one_until_the_last(audience, at):
    identifiers = [f"u{n}" for n in range(10)]  # u0 .. u9, in byte order as listed
    apply(audience, [Event("fs_user_id", i, "crm,vip", True, BASE) for i in identifiers])
    page1 = rows(audience, LINES, ("vip", "csv", at, None, 4, None))
    assert page1 == [(4, "".join(f"fs_user_id,u{n},1700000000\n" for n in range(4)), "fs_user_id:u3")]
    page2 = rows(audience, LINES, ("vip", "csv", at, "fs_user_id:u3", 4, None))
    assert page2 == [(4, "".join(f"fs_user_id,u{n},1700000000\n" for n in range(4, 8)), "fs_user_id:u7")]
    page3 = rows(audience, LINES, ("vip", "csv", at, "fs_user_id:u7", 4, None))
    assert page3 == [(2, "fs_user_id,u8,1700000000\nfs_user_id,u9,1700000000\n", None)]
    # a full last page says nothing follows
    assert rows(audience, LINES, ("vip", "csv", at, "fs_user_id:u5", 4, None))[-1][2] is None


@pytest.mark.parametrize("at", [None, EPOCH + timedelta(seconds=float(BASE) + 100)])
def test_one_identifier_type_pages_within_it(audience, at):
    apply(audience, [Event("fs_user_id", "u1", "crm,vip", True, BASE), Event("email", "e1", "crm,vip", True, BASE),
                     Event("email", "e2", "crm,vip", True, BASE), Event("email", "e3", "crm,vip", True, BASE)])
    assert rows(audience, LINES, ("vip", "csv", at, None, 2, "email")) == [
        (2, "email,e1,1700000000\nemail,e2,1700000000\n", "email:e2")]
    assert rows(audience, LINES, ("vip", "csv", at, "email:e2", 2, "email")) == [(1, "email,e3,1700000000\n", None)]
    # the last fs_user_id member is followed by email members only: no next page of fs_user_id
    assert rows(audience, LINES, ("vip", "csv", at, None, 1, "fs_user_id")) == [(1, "fs_user_id,u1,1700000000\n", None)]


@pytest.mark.parametrize("at", [None, EPOCH + timedelta(seconds=float(BASE) + 100)])
def test_blocks_of_ten_thousand_lines(audience, at):
    identifiers = [f"u{n:05}" for n in range(25_001)]
    for start in range(0, len(identifiers), 5000):
        apply(audience, [Event("fs_user_id", i, "crm,vip", True, BASE) for i in identifiers[start:start + 5000]])
    got = rows(audience, LINES, ("vip", "csv", at, None, 25_000, None))
    assert [(r[0], r[1].count("\n"), r[2]) for r in got] == [
        (10_000, 10_000, None), (10_000, 10_000, None), (5_000, 5_000, "fs_user_id:u24999")]
    assert "".join(r[1] for r in got) == "".join(f"fs_user_id,{i},1700000000\n" for i in identifiers[:25_000])


@pytest.mark.parametrize("args, sqlstate, field", [
    (("nope", "csv", None, None, None, None), "PT006", "audience"),
    (("vip", "xml", None, None, None, None), "PT010", "format"),
    (("vip", None, None, None, None, None), "PT010", "format"),
    (("vip", "csv", None, None, 0, None), "PT010", "limit"),
    (("vip", "csv", None, None, 1000001, None), "PT010", "limit"),
    (("vip", "csv", None, "no-colon", None, None), "PT010", "after"),
    (("vip", "csv", None, None, None, "nope"), "PT003", "identifier_type"),
])
def test_invalid_arguments(audience, args, sqlstate, field):
    error = expect_error(audience, LINES, args, sqlstate)
    assert error.detail == f"field: {field}"
