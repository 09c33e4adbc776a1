"""pyapp/workers/upkeep.py: the expiry sweeper and retention pruning that `passthrough serve` runs in the background,
and the chunked helpers the CLI uses (over psycopg and pg8000)."""

from __future__ import annotations

import time

import pytest
from http_helpers import make_client
from sqlhelpers import rows, scalar

from pyapp.db import connect
from pyapp.workers.upkeep import expire_all, prune_all
from pyapp.web import ApiConfig


def expired_qualify(conn, identifier, minutes_ago=120):
    conn.execute("SELECT passthrough.apply_event('fs_user_id', %s, 'aud-a', 'qualify', %s::numeric)",
                 (identifier, round(time.time() - minutes_ago * 60, 3)))


@pytest.fixture
def ttl_conn(conn):
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    conn.execute("SELECT passthrough.set_audience_ttl('seg_a', interval '1 hour')")
    return conn


def changes(conn):
    return [r[0] for r in rows(conn, "SELECT change FROM passthrough.changes(NULL, 1000)")]


def test_the_server_records_expiries_in_the_background(ttl_conn, db_url):
    expired_qualify(ttl_conn, "u")
    assert changes(ttl_conn) == ["entered"]
    config = ApiConfig(pool_min_size=1, pool_max_size=4, pool_timeout=2.0, expire_every=0.1)
    with make_client(db_url, config):
        deadline = time.monotonic() + 10
        while changes(ttl_conn) != ["entered", "expired"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert changes(ttl_conn) == ["entered", "expired"]
        expired_qualify(ttl_conn, "v")  # a second one while it runs
        while changes(ttl_conn).count("expired") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert changes(ttl_conn) == ["entered", "expired", "entered", "expired"]


def test_the_server_prunes_in_the_background(ttl_conn, db_url):
    expired_qualify(ttl_conn, "u", 300)
    expired_qualify(ttl_conn, "u", 200)
    ttl_conn.execute("SELECT passthrough.set_event_retention(interval '1 hour')")
    config = ApiConfig(pool_min_size=1, pool_max_size=4, pool_timeout=2.0, expire_every=0.1)
    with make_client(db_url, config):
        deadline = time.monotonic() + 10
        while scalar(ttl_conn, "SELECT count(*) FROM passthrough.events") > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert scalar(ttl_conn, "SELECT count(*) FROM passthrough.events") == 1
    assert scalar(ttl_conn, "SELECT history_horizon FROM passthrough.get_settings()") is not None


@pytest.mark.parametrize("driver", ["psycopg", "pg8000"])
def test_expire_all_and_prune_all_work_in_chunks_with_either_driver(ttl_conn, db_url, driver):
    for i in range(5):
        expired_qualify(ttl_conn, f"u{i}")
        expired_qualify(ttl_conn, f"u{i}", 90)
    ttl_conn.execute("SELECT passthrough.set_event_retention(interval '1 hour')")
    with connect(db_url, driver=driver) as conn:  # not autocommit: each chunk commits
        assert expire_all(conn, chunk=2) == 5
        assert prune_all(conn, chunk=2) == (5, 0, 0)
    assert changes(ttl_conn).count("expired") == 5
    assert scalar(ttl_conn, "SELECT count(*) FROM passthrough.events") == 5
