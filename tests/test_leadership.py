"""pyapp/web/leader.py: of several servers (or workers) on one database, one runs the background jobs
(expiry, retention, webhook delivery), and another takes over when it stops."""

from __future__ import annotations

import time
from contextlib import ExitStack

import pytest
from http_helpers import make_client
from test_webhooks import Receiver, qualify

from pyapp.web import ApiConfig

CONFIG = ApiConfig(pool_min_size=1, pool_max_size=3, pool_timeout=2.0, webhook_every=0.1, expire_every=0.1,
                   leadership_retry=0.1)


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def running_jobs(client) -> int:
    """How many of the app's background jobs have a task (the sweeper and webhook delivery)."""
    leadership = client.app.state.leadership
    return sum(job._task is not None for job in leadership.jobs)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_one_of_two_servers_runs_the_jobs_and_the_other_takes_over(conn, db_url):
    with ExitStack() as first, ExitStack() as second:
        clients = [first.enter_context(make_client(db_url, CONFIG)), second.enter_context(make_client(db_url, CONFIG))]
        wait_for(lambda: sum(c.app.state.leadership.leading for c in clients) == 1)
        time.sleep(0.5)  # several retries later: still one
        leading = [c.app.state.leadership.leading for c in clients]
        assert sorted(leading) == [False, True]
        assert [running_jobs(c) for c in clients] == [2 if lead else 0 for lead in leading]
        leader = leading.index(True)
        (first, second)[leader].close()  # the leader stops: its session, and the lock, end
        other = clients[1 - leader]
        wait_for(lambda: other.app.state.leadership.leading, seconds=5)
        assert running_jobs(other) == 2  # leading means every job runs


def test_two_servers_deliver_each_change_once(conn, db_url, receiver):
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.create_audience('vip', 'crm-vip')")
    conn.execute("SELECT passthrough.create_webhook('hook', %s, p_allow_private_network => true)", (receiver.url,))
    with make_client(db_url, CONFIG) as a, make_client(db_url, CONFIG) as b:
        wait_for(lambda: a.app.state.leadership.leading or b.app.state.leadership.leading)
        for who in ("u1", "u2", "u3"):
            qualify(conn, who)
            time.sleep(0.15)  # a round of delivery between two changes
        wait_for(lambda: len(receiver.acknowledged_changes()) >= 3)
        time.sleep(0.5)  # and nothing more arrives
        assert sum(c.app.state.leadership.leading for c in (a, b)) == 1
    assert [c["identifier"] for c in receiver.acknowledged_changes()] == ["u1", "u2", "u3"]
