"""A smoke run of a real ``passthrough serve --workers 2`` (pyapp/serving.py): events, GraphQL, revocation and
one webhook delivery, with two worker processes on one port."""

from __future__ import annotations

import time

import httpx
import pytest
from live_server import serving
from test_webhooks import Receiver

from pyapp.db import connect
from pyapp.serving import CONNECTIONS_BESIDES_POOL, max_workers, pool_size_per_worker

SDK_QUERY = ("query($userId: String, $audiences: [String]) {customer(fs_user_id: $userId) "
             "{audiences(subset: $audiences) {edges {node {name state}}}}}")


def event(who: str, ts: int) -> dict:
    return {"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": who},
            "data": {"audience_id": "crm-vip", "ts": ts}}


def fresh_connection_post(base: str, path: str, key: str, body) -> httpx.Response:
    """One request on a connection of its own: the kernel hands each new connection to either worker."""
    with httpx.Client(base_url=base, headers={"x-api-key": key}, timeout=10) as client:
        return client.post(path, json=body)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_two_workers_serve_events_graphql_revocation_and_one_webhook_delivery(db_url, tmp_path, receiver):
    with connect(db_url, autocommit=True) as c:
        c.execute("SELECT passthrough.enable()")
        c.execute("SELECT passthrough.create_audience('vip', 'crm-vip')")
        key = c.execute("SELECT passthrough.create_api_key('app', 'private')").fetchone()[0]
        c.execute("SELECT passthrough.create_webhook('hook', %s, p_allow_private_network => true)", (receiver.url,))
    with serving(db_url, tmp_path, "--workers", "2") as base, connect(db_url, autocommit=True) as c:
        # both workers are up: each has a pool, named after its process (the second may still be starting)
        deadline = time.monotonic() + 15
        while len(workers := {name for (name,) in c.execute(
                "SELECT DISTINCT application_name FROM pg_stat_activity"
                " WHERE application_name LIKE 'passthrough-http-%'")}) < 2:
            assert time.monotonic() < deadline, workers
            time.sleep(0.1)
        assert len(workers) == 2, workers
        for n in range(20):  # on new connections: both workers come to know the key
            assert fresh_connection_post(base, "/v3/events", key, [event(f"u{n}", 1_700_000_000 + n)]).status_code == 202
        assert c.execute("SELECT count(*) FROM passthrough.events").fetchone() == (20,)
        answer = fresh_connection_post(base, "/v3/graphql", key, {"query": SDK_QUERY, "variables": {"userId": "u3"}})
        assert answer.json() == {"data": {"customer": {"audiences": {"edges": [
            {"node": {"name": "vip", "state": "qualified"}}]}}}}
        # one webhook round: delivered by one worker only
        deadline = time.monotonic() + 15
        while len(receiver.acknowledged_changes()) < 20:
            assert time.monotonic() < deadline, receiver.acknowledged_changes()
            time.sleep(0.05)
        time.sleep(1.0)
        assert sorted(ch["identifier"] for ch in receiver.acknowledged_changes()) == sorted(f"u{n}" for n in range(20))
        # revoked: refused from the next request on, by every worker
        c.execute("SELECT passthrough.revoke_api_key('app')")
        for n in range(20):
            response = fresh_connection_post(base, "/v3/events", key, [event(f"r{n}", 1_700_000_100 + n)])
            assert response.status_code == 401, response.text
            response = fresh_connection_post(base, "/v3/graphql", key, {"query": SDK_QUERY, "variables": {"userId": "u3"}})
            assert response.status_code == 401, response.text
        assert c.execute("SELECT count(*) FROM passthrough.events").fetchone() == (20,)


@pytest.mark.parametrize("max_connections, reserved, workers, wanted, size", [
    (100, 3, 2, 10, 10),  # 48 each may use: the wanted 10
    (100, 3, 8, 10, 3),   # 48 // 8 = 6, less the 3 outside the pool
    (20, 3, 8, 10, 2),    # never below 2: a read and a write connection
    (1000, 3, 1, 50, 50),
])
def test_the_pools_share_half_of_the_servers_connections(max_connections, reserved, workers, wanted, size):
    assert CONNECTIONS_BESIDES_POOL == 3
    assert pool_size_per_worker(max_connections, reserved, workers, wanted) == size


@pytest.mark.parametrize("flag, logged", [((), False), (("--access-log",), True)])
def test_a_line_per_request_only_when_asked(db_url, tmp_path, flag, logged):
    with serving(db_url, tmp_path, "--workers", "1", *flag) as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
        time.sleep(0.2)
    [log] = tmp_path.glob("serve-*.log")
    assert ('"GET /healthz HTTP/1.1" 200' in log.read_text()) is logged


@pytest.mark.parametrize("max_connections, reserved, fit", [(100, 3, 9), (1000, 3, 99), (10, 3, 1)])
def test_as_many_workers_as_half_of_the_connections_allow(max_connections, reserved, fit):
    assert max_workers(max_connections, reserved) == fit  # 5 connections each at least: a pool of 2, 3 besides


def test_more_workers_than_fit_is_refused_before_serving(db_url, capsys):
    from pyapp import cli

    assert cli.main(["serve", "--database-url", db_url, "--no-migrate", "--workers", "5000"]) == 1
    assert "--workers: 5000 workers need at least 25000 connections" in capsys.readouterr().err


def test_a_stop_lets_the_requests_in_flight_finish(db_url, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import threading

    from live_server import free_port, readyz

    with connect(db_url, autocommit=True) as c:
        c.execute("SELECT passthrough.enable()")
        key = c.execute("SELECT passthrough.create_api_key('app', 'private')").fetchone()[0]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "pyapp.cli", "serve", "--database-url", db_url, "--host",
                                   "127.0.0.1", "--port", str(port), "--no-migrate", "--workers", "2"],
                                  stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 30
        while readyz(base) != 200:
            assert server.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        answers: list[httpx.Response] = []
        with connect(db_url) as blocker, connect(db_url, autocommit=True) as watcher:
            blocker.execute("LOCK TABLE passthrough.memberships IN SHARE MODE")  # the writer waits inside its statement
            request = threading.Thread(target=lambda: answers.append(
                fresh_connection_post(base, "/v3/events", key, [event("u1", 1_700_000_000)])))
            request.start()
            deadline = time.monotonic() + 15
            while not watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                      " AND application_name LIKE 'passthrough-http-%'").fetchone()[0]:
                assert time.monotonic() < deadline, "the request never reached the database"
                time.sleep(0.05)
            server.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            assert server.poll() is None  # draining: the request is still in flight
            blocker.rollback()  # the lock goes; the request finishes
            request.join(timeout=15)
        assert [a.status_code for a in answers] == [202]
        assert server.wait(timeout=30) == 0
        with connect(db_url) as c:
            assert c.execute("SELECT count(*) FROM passthrough.events").fetchone() == (1,)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_every_worker_times_out_a_trickled_request_head(db_url, tmp_path):
    """The limits travel to each worker process with its settings (pyapp/serving.py, app_from_environment)."""
    from test_slow_connections import SLOW_HEAD, closed_by_server, open_socket, trickle_until_closed

    with serving(db_url, tmp_path, "--workers", "2", "--header-timeout", "1") as base:
        sockets = [open_socket(base) for _ in range(6)]  # the kernel hands them to either worker
        try:
            closed_after = trickle_until_closed(sockets[0], SLOW_HEAD[:40], every=0.1, limit=5)
            time.sleep(1.5)  # the others, silent since they opened, are past their deadline too
            assert closed_after is not None and closed_after <= 3.0, closed_after
            assert all(closed_by_server(s) for s in sockets[1:])
        finally:
            for s in sockets:
                s.close()
