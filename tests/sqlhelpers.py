"""Helpers the tests share: a valid event to vary, running SQL and capturing the error it raises."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import psycopg
import pytest
from psycopg.types.json import Jsonb

__all__ = ["TS", "Jsonb", "SqlError", "event", "expect_error", "rows", "scalar", "reset_data", "stored_counts",
           "at", "ts_at", "now", "start_test_clock", "stop_test_clock"]

TS = 1_700_000_000

# Expiry and retention are decided by the server's clock: those tests place events minutes from "now", the
# wall clock when the running test started (conftest's autouse fixture test_clock starts it), so that how long
# collection or earlier tests took cannot move an event across a ttl or a horizon.
_test_started: float | None = None


def start_test_clock() -> None:
    global _test_started
    _test_started = time.time()


def stop_test_clock() -> None:
    global _test_started
    _test_started = None


def now() -> float:
    """Seconds since the epoch when the running test started."""
    if _test_started is None:
        raise RuntimeError("the test clock runs only during a test (conftest.py's test_clock fixture)")
    return _test_started


def at(minutes: float) -> float:
    """Seconds since the epoch (millisecond precision), `minutes` from now() (negative: in the past)."""
    return round(now() + minutes * 60, 3)


def ts_at(minutes: float) -> datetime:
    """The timestamptz the server stores for an event sent with ts = at(minutes)."""
    return datetime.fromtimestamp(at(minutes), timezone.utc)


@dataclass
class SqlError:
    sqlstate: str
    message: str
    detail: str | None
    hint: str | None

    @property
    def detail_json(self):
        return json.loads(self.detail)


def expect_error(conn, sql: str, params=(), sqlstate: str | None = None) -> SqlError:
    """Run sql, which must fail; return the error (checking its SQLSTATE when given)."""
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql, params)
    diag = caught.value.diag
    error = SqlError(diag.sqlstate, diag.message_primary, diag.message_detail, diag.message_hint)
    if sqlstate is not None:
        assert error.sqlstate == sqlstate, error
    return error


def rows(conn, sql: str, params=()) -> list[tuple]:
    return conn.execute(sql, params).fetchall()


def scalar(conn, sql: str, params=()):
    return conn.execute(sql, params).fetchone()[0]


def reset_data(conn) -> None:
    """Empty every data table (definitions, state, log, snapshots, change feed, expiry work list, webhooks) and
    forget what retention pruned; keep the other settings and the identifier types."""
    # DELETE, not TRUNCATE: a running app's background tasks (upkeep, webhooks) read these tables, and
    # TRUNCATE's exclusive locks, taken one table after another, can deadlock with them
    for table in ("memberships", "events", "batches", "snapshot_members", "snapshots", "audience_size_deltas",
                  "membership_changes", "membership_expiries", "webhooks", "audiences", "external_audiences"):
        conn.execute(f"DELETE FROM passthrough.{table}")
    conn.execute("UPDATE passthrough.settings SET event_retention = NULL, history_horizon = NULL, "
                 "feed_pruned_through = NULL, last_pruned_at = NULL")


def event(**overrides):
    """A valid passthrough event; overrides replace top-level keys, data_* keys replace data keys."""
    base = {
        "type": "passthrough",
        "action": "qualify",
        "identifiers": {"fs_user_id": "user-1"},
        "data": {"audience_id": "aud-1", "ts": TS},
    }
    for key, value in overrides.items():
        if key.startswith("data_"):
            base["data"][key[5:]] = value
        else:
            base[key] = value
    return base


def stored_counts(conn) -> tuple[int, int, int]:
    """(membership rows, logged events, batches)."""
    return conn.execute(
        "SELECT (SELECT count(*) FROM passthrough.memberships), (SELECT count(*) FROM passthrough.events),"
        " (SELECT count(*) FROM passthrough.batches)"
    ).fetchone()
