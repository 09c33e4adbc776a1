"""passthrough.enable / disable / is_enabled / get_settings / set_max_future_skew / list_settings / set_setting,
and `passthrough settings`."""

from datetime import timedelta

import pytest
from sqlhelpers import expect_error, rows, scalar

from pyapp import cli


def test_passthrough_is_off_after_install_and_switches(conn):
    assert scalar(conn, "SELECT passthrough.is_enabled()") is False
    conn.execute("SELECT passthrough.enable()")
    assert scalar(conn, "SELECT passthrough.is_enabled()") is True
    conn.execute("SELECT passthrough.disable()")
    assert scalar(conn, "SELECT passthrough.is_enabled()") is False


def test_settings_are_one_row_with_defaults(conn):
    assert rows(conn, "SELECT passthrough_enabled, max_future_skew, public_passthrough_events"
                      " FROM passthrough.get_settings()") == [(False, timedelta(minutes=5), False)]
    conn.execute("SELECT passthrough.set_max_future_skew(interval '1 minute')")
    assert scalar(conn, "SELECT max_future_skew FROM passthrough.get_settings()") == timedelta(minutes=1)
    error = expect_error(conn, "SELECT passthrough.set_max_future_skew(NULL)", sqlstate="PT010")
    assert error.message == "max_future_skew must be a non-negative interval"
    expect_error(conn, "INSERT INTO passthrough.settings DEFAULT VALUES", sqlstate="23505")


def listed(conn) -> dict[str, str]:
    return dict((n, v) for n, v, _ in rows(conn, "SELECT name, value, description FROM passthrough.list_settings()"))


def test_list_settings_names_each_with_its_value(conn):
    assert listed(conn) == {"passthrough_enabled": "off", "public_passthrough_events": "off",
                            "max_future_skew": "00:05:00", "event_retention": "none"}
    assert all(d for (d,) in rows(conn, "SELECT description FROM passthrough.list_settings()"))


def test_set_setting_changes_each_by_name(conn):
    conn.execute("SELECT passthrough.set_setting('public_passthrough_events', 'on')")
    conn.execute("SELECT passthrough.set_setting('passthrough_enabled', 'true')")
    conn.execute("SELECT passthrough.set_setting('max_future_skew', '90 seconds')")
    conn.execute("SELECT passthrough.set_setting('event_retention', '30 days')")
    assert listed(conn) == {"passthrough_enabled": "on", "public_passthrough_events": "on",
                            "max_future_skew": "00:01:30", "event_retention": "30 days"}
    assert rows(conn, "SELECT passthrough_enabled, public_passthrough_events, max_future_skew, event_retention"
                      " FROM passthrough.get_settings()") == [(True, True, timedelta(seconds=90), timedelta(days=30))]
    conn.execute("SELECT passthrough.set_setting('event_retention', 'none')")
    conn.execute("SELECT passthrough.set_setting('public_passthrough_events', 'OFF')")
    assert listed(conn)["event_retention"] == "none" and listed(conn)["public_passthrough_events"] == "off"


@pytest.mark.parametrize("name, value, field", [
    ("nope", "on", "name"), (None, "on", "name"), ("public_passthrough_events", "yes please", "value"),
    ("passthrough_enabled", None, "value"), ("max_future_skew", "soon", "value"),
    ("max_future_skew", "-1 minute", None), ("event_retention", "0 days", "event_retention"),
])
def test_set_setting_refuses_what_it_cannot_be(conn, name, value, field):
    before = listed(conn)
    error = expect_error(conn, "SELECT passthrough.set_setting(%s, %s)", (name, value), sqlstate="PT010")
    if field is not None:
        assert error.detail == f"field: {field}"
    assert listed(conn) == before


def test_the_cli_lists_and_sets(conn, db_url, capsys):
    assert cli.main(["settings", "--database-url", db_url]) == 0
    out = capsys.readouterr().out
    assert "public_passthrough_events" in out and "max_future_skew" in out
    assert cli.main(["settings", "set", "public_passthrough_events", "on", "--database-url", db_url]) == 0
    assert listed(conn)["public_passthrough_events"] == "on"
    assert cli.main(["settings", "set", "max_future_skew", "soon", "--database-url", db_url]) == 1
    assert "max_future_skew must be an interval" in capsys.readouterr().err
