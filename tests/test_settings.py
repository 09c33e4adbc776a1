"""passthrough.enable / disable / is_enabled / get_settings / set_max_future_skew."""

from datetime import timedelta

from sqlhelpers import expect_error, rows, scalar


def test_passthrough_is_off_after_install_and_switches(conn):
    assert scalar(conn, "SELECT passthrough.is_enabled()") is False
    conn.execute("SELECT passthrough.enable()")
    assert scalar(conn, "SELECT passthrough.is_enabled()") is True
    conn.execute("SELECT passthrough.disable()")
    assert scalar(conn, "SELECT passthrough.is_enabled()") is False


def test_settings_are_one_row_with_defaults(conn):
    assert rows(conn, "SELECT passthrough_enabled, max_future_skew FROM passthrough.get_settings()") == [
        (False, timedelta(days=1))
    ]
    conn.execute("SELECT passthrough.set_max_future_skew(interval '5 minutes')")
    assert scalar(conn, "SELECT max_future_skew FROM passthrough.get_settings()") == timedelta(minutes=5)
    error = expect_error(conn, "SELECT passthrough.set_max_future_skew(NULL)", sqlstate="PT010")
    assert error.message == "max_future_skew must be a non-negative interval"
    expect_error(conn, "INSERT INTO passthrough.settings DEFAULT VALUES", sqlstate="23505")
