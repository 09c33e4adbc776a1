"""Readers cannot starve writers (issue 17, item 1): the read and write connection budgets, the statement timeout
on API reads, and the cost of past sizes in GraphQL (pyapp/web/database.py, pyapp/errors.py,
pyapp/web/graphql/limits.py)."""

from __future__ import annotations

import statistics
import threading
import time

import httpx
import psycopg
import pytest
from http_helpers import TEST_CONFIG, json_headers
from live_server import serving
from starlette.testclient import TestClient

from pyapp.db import connect
from pyapp.web import create_app
from pyapp.web.config import ApiConfig

pytest_plugins = ["http_fixtures"]

TS = 1_700_000_000
BIG_MEMBERS = 150_000  # stands in for the 3.1 M members of the report: each past size below reads them all
READERS = 12
WRITES_EVERY = 0.1  # seconds
WRITER_SECONDS = 6.0

# The costliest read the API still allows: a size as of a past instant (one per query: graphql/limits.py),
# of an audience whose members mostly changed after that instant, so that each one is looked up in the log.
PAST_SIZE_QUERY = """query($at: Float) {
  customer(fs_user_id: "u0") { audiences(at: $at) { edges { node { name size } } } } }"""
PAST_SIZE_AT = TS + 10  # 11 members then (u0..u10); the other members joined later


def fill_big_audience(conn: psycopg.Connection, members: int) -> None:
    """``members`` customers, u0, u1, ..., each qualified at TS + its number, in audience 'big'."""
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.create_audience('big', 'ext-big')")
    conn.execute("SELECT passthrough.create_audience('small', 'ext-small')")
    for start in range(0, members, 50_000):
        conn.execute(
            "SELECT passthrough.apply_events((SELECT jsonb_agg(jsonb_build_object("
            " 'type', 'passthrough', 'action', 'qualify', 'identifiers', jsonb_build_object('fs_user_id', 'u' || n),"
            " 'data', jsonb_build_object('audience_id', 'ext-big', 'ts', %s + n)))"
            " FROM generate_series(%s::bigint, %s) n), 'test')",
            (TS, start, min(start + 50_000, members) - 1))
    conn.execute("ANALYZE")


def batch(n: int) -> list[dict]:
    return [{"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": f"w{n}-{i}"},
             "data": {"audience_id": "ext-small", "ts": TS + i}} for i in range(10)]


def test_readers_looping_over_past_sizes_leave_event_ingestion_untouched(db_url, tmp_path):
    """12 clients loop over past sizes of a large audience while a writer posts a batch every 100 ms: every
    batch is 202, p99 under 250 ms. Before the budgets, the readers held every pooled connection and the
    writer waited behind them (503 after the 5 s pool timeout against 3.1 M members). The server runs with
    its defaults: a pool of 10, the 2 s read statement timeout."""
    with connect(db_url, autocommit=True) as c:
        fill_big_audience(c, BIG_MEMBERS)
        public = c.execute("SELECT passthrough.create_api_key('reader', 'public')").fetchone()[0]
        private = c.execute("SELECT passthrough.create_api_key('writer', 'private')").fetchone()[0]
        started = time.monotonic()  # what the readers ask, asked alone (no statement timeout here)
        assert c.execute("SELECT name, size FROM passthrough.customer_audiences_at('fs_user_id', 'u0', NULL,"
                         " to_timestamp(%s))", (PAST_SIZE_AT,)).fetchall() == [("big", 11)]
        alone = time.monotonic() - started
    with serving(db_url, tmp_path, "--workers", "1") as base:

        stop = threading.Event()
        read_outcomes: list[tuple[float, str]] = []

        def reader() -> None:
            with httpx.Client(base_url=base, headers=json_headers(public), timeout=60) as client:
                while not stop.is_set():
                    t0 = time.monotonic()
                    response = client.post("/v3/graphql", json={"query": PAST_SIZE_QUERY,
                                                                "variables": {"at": PAST_SIZE_AT}})
                    body = response.json()
                    outcome = (body["errors"][0]["extensions"]["code"] if "errors" in body else "ok")
                    read_outcomes.append((time.monotonic() - t0, f"{response.status_code} {outcome}"))

        readers = [threading.Thread(target=reader) for _ in range(READERS)]
        for thread in readers:
            thread.start()
        try:
            time.sleep(1.0)  # every read connection is busy by now
            writes: list[tuple[float, int]] = []
            with httpx.Client(base_url=base, headers=json_headers(private), timeout=60) as writer:
                n = 0
                end = time.monotonic() + WRITER_SECONDS
                while time.monotonic() < end:
                    t0 = time.monotonic()
                    status = writer.post("/v3/events", json=batch(n)).status_code
                    writes.append((time.monotonic() - t0, status))
                    n += 1
                    time.sleep(max(0.0, t0 + WRITES_EVERY - time.monotonic()))
        finally:
            stop.set()
            for thread in readers:
                thread.join(timeout=120)

    latencies = sorted(t for t, _ in writes)
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    report = (f"one read alone {alone:.2f} s; {len(read_outcomes)} reads "
              f"(median {statistics.median(t for t, _ in read_outcomes):.2f} s, "
              f"{sorted(set(o for _, o in read_outcomes))}); {len(writes)} writes, p50 "
              f"{statistics.median(latencies) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms, "
              f"statuses {sorted(set(s for _, s in writes))}")
    print(report)
    # the readers did load the server: each read took a good while (they shared the read budget)
    assert statistics.median(t for t, _ in read_outcomes) > 0.3, report
    assert len(writes) >= 40, report
    assert {s for _, s in writes} == {202}, report
    assert p99 < 0.250, report


# --------------------------------------------------------------------------- the read statement timeout

SHORT_READS = ApiConfig(pool_min_size=1, pool_max_size=4, pool_timeout=5.0, read_statement_timeout=0.3)
LOCK_HELD_SECONDS = 3.0  # far longer than the read timeout: without it, the read would wait this long, then answer


def audiences_locked(url: str, seconds: float) -> threading.Event:
    """Take an ACCESS EXCLUSIVE lock on passthrough.audiences, so that every statement reading it waits, and
    release it after ``seconds`` (in a thread); the event is set once the lock is held."""
    held = threading.Event()

    def hold() -> None:
        with connect(url) as conn:
            conn.execute("LOCK TABLE passthrough.audiences IN ACCESS EXCLUSIVE MODE")
            held.set()
            time.sleep(seconds)
            conn.commit()

    threading.Thread(target=hold, daemon=True).start()
    assert held.wait(10)
    return held


@pytest.mark.parametrize("api_config", [SHORT_READS])
def test_a_graphql_read_past_the_statement_timeout_is_a_timeout_error_not_a_5xx(client, enabled, public_key,
                                                                                  http_database_url):
    enabled.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    query = {"query": "{ audiences { edges { node { name } } } }"}
    assert client.post("/v3/graphql", headers=json_headers(public_key), json=query).status_code == 200  # key known
    audiences_locked(http_database_url, LOCK_HELD_SECONDS)
    started = time.monotonic()
    response = client.post("/v3/graphql", headers=json_headers(public_key), json=query)
    assert time.monotonic() - started < LOCK_HELD_SECONDS - 1
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"] == {"classification": "DataFetchingException", "code": "TIMEOUT", "sqlstate": "57014"}
    assert error["path"] == ["audiences"]
    assert "ran longer than the server allows" in error["message"]


@pytest.mark.parametrize("api_config", [SHORT_READS])
def test_an_http_read_past_the_statement_timeout_is_503_statement_timeout(client, enabled, private_key,
                                                                           http_database_url):
    enabled.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    audiences_locked(http_database_url, LOCK_HELD_SECONDS)
    started = time.monotonic()
    response = client.get("/v3/segments/seg_a", headers={"x-api-key": private_key})
    assert time.monotonic() - started < LOCK_HELD_SECONDS - 1
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    detail = response.json()["detail"]
    assert (detail["code"], detail["sqlstate"]) == ("statement_timeout", "57014")
    assert "ran longer than the server allows" in detail["message"]


@pytest.mark.parametrize("api_config", [SHORT_READS])
def test_a_write_waits_past_the_read_statement_timeout(client, enabled, private_key, http_database_url):
    """Writes have no statement timeout of their own: a segment change waits for the lock, then is stored."""
    enabled.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    audiences_locked(http_database_url, 1.0)
    started = time.monotonic()
    response = client.put("/v3/segments/seg_a", headers=json_headers(private_key),
                          json={"definition": {"external": {"external_audience_id": "aud-b"}}})
    assert response.status_code == 200, response.text
    assert time.monotonic() - started > 0.6  # it did wait, past the 0.3 s reads get
    assert enabled.execute("SELECT external_audience_id FROM passthrough.get_audience('seg_a')").fetchone() == ("aud-b",)


# --------------------------------------------------------------------------- the budgets and the cost of past sizes


@pytest.mark.parametrize("total, reads, writes", [(10, 5, 5), (4, 2, 2), (3, 2, 1), (2, 1, 1), (1, 1, 1)])
def test_the_pool_is_split_into_a_read_and_a_write_budget(total, reads, writes):
    config = ApiConfig(pool_max_size=total)
    assert (config.read_pool_max_size, config.write_pool_max_size) == (reads, writes)


def test_the_default_read_statement_timeout_is_at_most_2_seconds():
    assert 0 < ApiConfig().read_statement_timeout <= 2


@pytest.mark.parametrize("query, reads", [
    ('{ customer(fs_user_id: "u") { audiences(at: 1) { edges { node { name size } } } } }', 1),
    ('{ customer(fs_user_id: "u") { audiences(at: 1) { edges { node { name } } } } }', 0),  # no size: no log read
    ('{ customer(fs_user_id: "u") { audiences { edges { node { size } } } } }', 0),  # the live size: stored
    ('{ customer(fs_user_id: "u") { audiences(at: null) { edges { node { size } } } } }', 0),
    ('{ size_history(audience: "a", from: 1, to: 2) { size_at_end } }', 1),
    ('{ a: customer(fs_user_id: "u") { audiences(at: 1) { edges { node { size } } } }'
     '  b: customer(fs_user_id: "v") { audiences(at: 1) { edges { node { size } } } } }', 2),
    ('{ customer(fs_user_id: "u") { audiences(at: 1) { ...E } } size_history(audience: "a", from: 1, to: 2) { end } }'
     ' fragment E on AudienceConnection { edges { node { ... on Audience { size } } } }', 2),
])
def test_history_reads_are_counted(query, reads):
    from graphql import parse

    from pyapp.web.graphql.limits import measure

    assert measure(parse(query)).history_reads == reads


def test_a_query_may_ask_for_one_past_size_read(client, enabled, public_key):
    enabled.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    one = '{ customer(fs_user_id: "u") { audiences(at: 1700000000) { edges { node { name size } } } } }'
    assert client.post("/v3/graphql", headers=json_headers(public_key), json={"query": one}).json() == {
        "data": {"customer": {"audiences": {"edges": []}}}}
    aliased = "{ " + " ".join(f'c{i}: customer(fs_user_id: "u") {{ audiences(at: 1700000000) {{ edges {{ node {{ size }} }} }} }}'
                              for i in range(15)) + " }"
    response = client.post("/v3/graphql", headers=json_headers(public_key), json={"query": aliased})
    assert response.status_code == 200
    (error,) = response.json()["errors"]
    assert error["extensions"] == {"classification": "ValidationError", "code": "TOO_MANY_HISTORY_READS"}
    assert "15 times" in error["message"] and "the limit is 1" in error["message"]
