"""passthrough.add_identifier_type / remove_identifier_type / list_identifier_types."""

import psycopg
import pytest

from sqlhelpers import expect_error, rows


def test_seeded_types_are_high_confidence(conn):
    assert rows(conn, "SELECT name, high_confidence FROM passthrough.list_identifier_types()") == [
        ("customer_id", True),
        ("email", True),
        ("fs_user_id", True),
        ("vuid", False),
    ]


def test_add_normalises_and_updates_confidence(conn):
    conn.execute("SELECT passthrough.add_identifier_type('Phone-Number', false)")
    assert rows(conn, "SELECT high_confidence FROM passthrough.list_identifier_types() WHERE name = 'phone_number'") == [
        (False,)
    ]
    conn.execute("SELECT passthrough.add_identifier_type('phone_number')")
    assert rows(conn, "SELECT high_confidence FROM passthrough.list_identifier_types() WHERE name = 'phone_number'") == [
        (True,)
    ]


@pytest.mark.parametrize("name", ["", "1abc", "a b", "a;drop", "x" * 64, None])
def test_bad_names_are_refused(conn, name):
    error = expect_error(conn, "SELECT passthrough.add_identifier_type(%s)", (name,), "PT010")
    assert error.message.startswith("invalid identifier type name")


def test_remove_refuses_a_type_in_use_and_unknown_types(conn):
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.add_identifier_type('crm_id')")
    conn.execute("SELECT passthrough.apply_event('crm_id', 'c1', 'aud', 'qualify')")
    error = expect_error(conn, "SELECT passthrough.remove_identifier_type('crm_id')", sqlstate="PT009")
    assert error.message == "identifier type 'crm_id' is in use"
    assert "add_identifier_type(name, false)" in error.hint
    expect_error(conn, "SELECT passthrough.remove_identifier_type('nope')", sqlstate="PT008")
    conn.execute("SELECT passthrough.remove_identifier_type('EMAIL')")
    assert "email" not in [n for (n,) in rows(conn, "SELECT name FROM passthrough.list_identifier_types()")]


def test_changes_are_announced_for_listeners(db_url, conn):
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN passthrough_identifier_types")
        conn.execute("SELECT passthrough.add_identifier_type('loyalty_id')")
        notices = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in notices] == ["passthrough_identifier_types"]
