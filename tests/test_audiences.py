"""Audience definitions: create_audience, put_audience, validate_audience, get/list/delete_audience."""

import pytest

from sqlhelpers import Jsonb, expect_error, rows, scalar


def put(conn, name, external, description=None, metadata=None):
    return scalar(
        conn,
        "SELECT passthrough.put_audience(%s, %s, %s, %s)",
        (name, external, description, Jsonb(metadata if metadata is not None else {})),
    )


def test_revision_starts_at_one_and_grows_only_on_change(conn):
    assert put(conn, "vip", "ext-vip", "Big spenders", {"owner": "crm"}) == 1
    assert put(conn, "vip", "ext-vip", "Big spenders", {"owner": "crm"}) == 1  # no-op
    assert put(conn, "vip", "ext-vip", "Top spenders", {"owner": "crm"}) == 2
    assert put(conn, "vip", "ext-vip", "Top spenders", {"owner": "bi"}) == 3
    assert put(conn, "vip", "ext-vip-2", "Top spenders", {"owner": "bi"}) == 4
    assert put(conn, "vip", "ext-vip-2", None, {"owner": "bi"}) == 5
    assert put(conn, "vip", "ext-vip-2", None, {"owner": "bi"}) == 5
    assert rows(conn, "SELECT name, external_audience_id, revision FROM passthrough.get_audience('vip')") == [
        ("vip", "ext-vip-2", 5)
    ]


def test_create_refuses_an_existing_name(conn):
    assert scalar(conn, "SELECT passthrough.create_audience('vip', 'ext-vip')") == 1
    error = expect_error(conn, "SELECT passthrough.create_audience('vip', 'other')", sqlstate="PT005")
    assert error.message == "audience 'vip' already exists"


def test_an_external_id_belongs_to_one_audience(conn):
    put(conn, "a", "ext")
    error = expect_error(conn, "SELECT passthrough.put_audience('b', 'ext')", sqlstate="PT004")
    assert error.message == "external audience id 'ext' is already linked to audience 'a'"
    expect_error(conn, "SELECT passthrough.validate_audience('b', 'ext')", sqlstate="PT004")
    conn.execute("SELECT passthrough.delete_audience('a')")
    assert put(conn, "b", "ext") == 1


@pytest.mark.parametrize(
    "name, external, description, metadata, field",
    [
        ("Bad-Name", "ext", None, {}, "name"),
        ("", "ext", None, {}, "name"),
        ("x" * 256, "ext", None, {}, "name"),
        ("ok", "", None, {}, "external_audience_id"),
        ("ok", None, None, {}, "external_audience_id"),
        ("ok", "e" * 256, None, {}, "external_audience_id"),
        ("ok", "ext", "d" * 4097, {}, "description"),
        ("ok", "ext", None, [1, 2], "metadata"),
        ("ok", "ext", None, {"k": "v" * 70000}, "metadata"),
    ],
)
def test_invalid_fields_are_named(conn, name, external, description, metadata, field):
    for function in ("put_audience", "create_audience", "validate_audience"):
        error = expect_error(
            conn,
            f"SELECT passthrough.{function}(%s, %s, %s, %s)",
            (name, external, description, Jsonb(metadata)),
            "PT007",
        )
        assert error.detail.startswith(f"field: {field}")
    assert scalar(conn, "SELECT count(*) FROM passthrough.audiences") == 0


def test_validate_saves_nothing(conn):
    conn.execute("SELECT passthrough.validate_audience('fine', 'ext', 'd', '{}')")
    assert scalar(conn, "SELECT count(*) FROM passthrough.audiences") == 0


def test_get_and_delete_missing_audience(conn):
    expect_error(conn, "SELECT * FROM passthrough.get_audience('ghost')", sqlstate="PT006")
    error = expect_error(conn, "SELECT passthrough.delete_audience('ghost')", sqlstate="PT006")
    assert error.message == "audience 'ghost' does not exist"


def test_list_is_keyset_paginated_in_name_order(conn):
    names = [f"seg_{i:02d}" for i in range(25)]
    for name in reversed(names):
        put(conn, name, f"ext-{name}")
    seen, after = [], None
    while True:
        page = [n for (n,) in rows(conn, "SELECT name FROM passthrough.list_audiences(10, %s)", (after,))]
        seen += page
        if len(page) < 10:
            break
        after = page[-1]
    assert seen == names
    expect_error(conn, "SELECT * FROM passthrough.list_audiences(1001)", sqlstate="PT010")
    expect_error(conn, "SELECT * FROM passthrough.list_audiences(-1)", sqlstate="PT010")
    expect_error(conn, "SELECT * FROM passthrough.audience_page_info(1001)", sqlstate="PT010")


def test_page_info_says_whether_a_page_follows_and_where(conn):
    for name in ("a1", "a2", "a3"):
        put(conn, name, f"ext-{name}")
    info = "SELECT has_next_page, next_after FROM passthrough.audience_page_info(%s, %s)"
    assert rows(conn, info, (2, None)) == [(True, "a2")]
    assert rows(conn, info, (2, "a2")) == [(False, "a3")]
    assert rows(conn, info, (3, None)) == [(False, "a3")]
    assert rows(conn, info, (0, None)) == [(True, None)]
    assert rows(conn, info, (2, "a3")) == [(False, None)]
    # NULL: the default page size, 100, for both functions
    assert rows(conn, info, (None, None)) == [(False, "a3")]
    assert len(rows(conn, "SELECT name FROM passthrough.list_audiences(NULL)")) == 3


def test_the_default_page_is_100_audiences(conn):
    for i in range(101):
        put(conn, f"p{i:03d}", f"ext-p{i:03d}")
    page = [n for (n,) in rows(conn, "SELECT name FROM passthrough.list_audiences()")]
    assert page == [f"p{i:03d}" for i in range(100)]
    assert rows(conn, "SELECT has_next_page, next_after FROM passthrough.audience_page_info()") == [(True, "p099")]


def test_delete_keeps_membership_for_a_later_definition(conn):
    conn.execute("SELECT passthrough.enable()")
    put(conn, "vip", "ext-vip")
    conn.execute("SELECT passthrough.apply_event('email', 'v1', 'ext-vip', 'qualify')")
    conn.execute("SELECT passthrough.delete_audience('vip')")
    assert rows(conn, "SELECT name FROM passthrough.customer_audiences('email', 'v1')") == []
    put(conn, "vip_again", "ext-vip")
    assert rows(conn, "SELECT name, size FROM passthrough.customer_audiences('email', 'v1')") == [("vip_again", 1)]


def test_a_ttl_over_9999999999_seconds_is_pt007(conn):
    # SQL's rule, whatever the caller (the segments route used to check it alone)
    put(conn, "seg_ttl", "ext-ttl")
    conn.execute("SELECT passthrough.set_audience_ttl('seg_ttl', interval '9999999999 seconds')")
    error = expect_error(conn, "SELECT passthrough.set_audience_ttl('seg_ttl', interval '10000000000 seconds')",
                         sqlstate="PT007")
    assert error.detail == "field: ttl"
    expect_error(conn, "SELECT passthrough.create_audience('seg_ttl2', 'ext-ttl2', p_ttl => interval '400 years')",
                 sqlstate="PT007")
