"""The connection pool (pyapp/web/database.py): round trips per request, and connections broken since
their last use (a database restart, ``pg_terminate_backend``) failing no request.

Round trips are counted in the app's own process: every exchange psycopg waits on the server for,
made by a task of an HTTP request (the GraphQL listener and the background upkeep are not counted).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from http_helpers import TestClient, check_response_is_documented, json_headers
from sqlhelpers import event

from pyapp.web import ApiConfig, create_app
from pyapp.web.database import IDLE_CHECK_SECONDS, Pool

pytest_plugins = ["http_fixtures"]

SDK_QUERY = (
    "query($userId: String, $audiences: [String]) {customer(fs_user_id: $userId) "
    "{audiences(subset: $audiences) {edges {node {name state}}}}}"
)
# three customer fields: their resolvers share the request's one connection
THREE_CUSTOMERS = "{" + " ".join(
    f'c{i}: customer(fs_user_id: "user-{i}") {{audiences {{edges {{node {{name}}}}}}}}' for i in range(3)
) + "}"

_counter: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("round_trips", default=None)


class Counting:
    """The app, with the round trips of each HTTP request counted (``trips``)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.trips = 0

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        counter = [0]
        token = _counter.set(counter)  # copied into the tasks the request starts, not into others
        try:
            await self.app(scope, receive, send)
        finally:
            _counter.reset(token)
            self.trips += counter[0]


def _counted(gen, counter):
    """psycopg's generator, counting one round trip when it has to wait for the server."""
    try:
        state = next(gen)
    except StopIteration as stop:
        return stop.value
    counter[0] += 1
    while True:
        ready = yield state
        try:
            state = gen.send(ready)
        except StopIteration as stop:
            return stop.value


@pytest.fixture
def counting_client(db, http_database_url, monkeypatch) -> Iterator[TestClient]:
    original = psycopg.AsyncConnection.wait

    async def wait(self, gen, *args, **kwargs):
        counter = _counter.get()
        return await original(self, gen if counter is None else _counted(gen, counter), *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "wait", wait)
    app = Counting(create_app(http_database_url, config=ApiConfig(pool_min_size=2, pool_max_size=4, pool_timeout=5.0)))
    with TestClient(app) as client:
        client.event_hooks["response"].append(check_response_is_documented)
        yield client


def trips_per_request(client: TestClient, send, n: int = 12) -> float:
    for _ in range(8):  # warm: the GraphQL schema is loaded, the connections are fresh
        send()
    before = client.app.trips
    for _ in range(n):
        send()
    return (client.app.trips - before) / n


@pytest.fixture
def requests(counting_client, enabled, public_key, private_key):
    client = counting_client
    enabled.execute("SELECT passthrough.put_audience('seg_a', 'aud-1')")
    ts = iter(range(1_700_000_000, 1_800_000_000))

    def ok(response, status=200):
        assert response.status_code == status, response.text
        assert "errors" not in response.json(), response.text
        return response

    return {
        "graphql customer": lambda: ok(client.post("/v3/graphql", headers=json_headers(public_key), json={
            "query": SDK_QUERY, "variables": {"userId": "user-1", "audiences": ["seg_a"]}})),
        "graphql three customers": lambda: ok(client.post("/v3/graphql", headers=json_headers(public_key),
                                                          json={"query": THREE_CUSTOMERS})),
        "POST /v3/events": lambda: ok(client.post("/v3/events", headers=json_headers(private_key),
                                                  json=[event(data_ts=next(ts))]), 202),
        "GET /v3/segments/{id}": lambda: ok(client.get("/v3/segments/seg_a", headers={"x-api-key": private_key})),
        "PUT /v3/segments/{id}": lambda: ok(client.put("/v3/segments/seg_a", headers=json_headers(private_key),
                                                       json={"definition": {"external": {"external_audience_id": "aud-1"}}})),
        "GET /readyz": lambda: ok(client.get("/readyz")),
    }


# Hot requests with a key the worker found valid before: the statement checks the key itself (auth.py).
# Others: API-key lookup + the statement; readyz runs its three reads; PUT reads the body between the two checkouts
EXPECTED_TRIPS = {
    "graphql customer": 1,
    "graphql three customers": 3,  # one statement per customer field (the first checks the key), on one connection
    "POST /v3/events": 1,  # no BEGIN/COMMIT: apply_events is one autocommit statement, which checks the key
    "GET /v3/segments/{id}": 2,
    "PUT /v3/segments/{id}": 2,
    "GET /readyz": 3,
}


def test_round_trips_per_request(counting_client, requests):
    assert {name: trips_per_request(counting_client, send) for name, send in requests.items()} == EXPECTED_TRIPS


def test_checkouts_per_request(counting_client, requests):
    pools = counting_client.app.state.pools  # reads from the read budget, writes from the write budget
    for name, budget, checkouts in [("graphql customer", "read", 1), ("graphql three customers", "read", 1),
                                    ("GET /v3/segments/{id}", "read", 1), ("POST /v3/events", "write", 1)]:
        requests[name]()
        seen = []
        for _ in range(3):  # the background jobs check out write connections too (a webhook poll each second,
            # and on every NOTIFY): they only add, so the fewest checkouts of three tries are the request's own
            before = {b: pool.get_stats()["requests_num"] for b, pool in pools.items()}
            requests[name]()
            after = {b: pool.get_stats()["requests_num"] for b, pool in pools.items()}
            seen.append({b: after[b] - before[b] for b in pools})
        fewest = {b: min(s[b] for s in seen) for b in pools}
        assert fewest == {"read": 0, "write": 0, budget: checkouts}, (name, seen)


def test_an_idle_connection_is_checked_at_checkout_a_recently_used_one_is_not(counting_client, requests):
    pool: Pool = counting_client.app.state.read_pool  # a GET's budget
    assert pool.idle_check_seconds == IDLE_CHECK_SECONDS
    send = requests["GET /v3/segments/{id}"]
    assert trips_per_request(counting_client, send) == 2
    pool.idle_check_seconds = 0.2
    for _ in range(3):
        time.sleep(0.3)  # every connection of the pool has been idle longer than that
        before = counting_client.app.trips
        send()
        assert counting_client.app.trips - before == 3  # the check, the key, the read


def idle_app_backends(conn: psycopg.Connection) -> list[int]:
    return [pid for (pid,) in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'passthrough-http' AND state = 'idle'").fetchall()]


def terminate_idle_app_backends(conn: psycopg.Connection) -> int:
    """Kill every idle connection of the app's pool, as a database restart would, and wait until they are gone."""
    pids = idle_app_backends(conn)
    for pid in pids:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + 10
    while set(pids) & set(idle_app_backends(conn)):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return len(pids)


@pytest.mark.parametrize("name", list(EXPECTED_TRIPS))
def test_connections_broken_since_their_last_use_fail_no_request(counting_client, requests, enabled, name):
    """The pool's connections all die between two requests (within IDLE_CHECK_SECONDS: no check at
    checkout); the next request of every kind is answered as if nothing happened, and so are the following."""
    pools: list[Pool] = list(counting_client.app.state.pools.values())  # the read and the write budget
    for pool in pools:
        pool.idle_check_seconds = 3600  # so that only the recovery from a broken connection is at work
    for _ in range(3):
        requests[name]()
    assert terminate_idle_app_backends(enabled) >= 2
    started = time.monotonic()
    requests[name]()
    # the broken connections are replaced at once (pool.check()), not found one by one at checkout, where
    # the pool waits 1 s, then 2 s, ... between two failed checks
    assert time.monotonic() - started < 0.9
    for _ in range(3):
        requests[name]()
    assert sum(p.get_stats().get("connections_lost", 0) + p.get_stats().get("returns_bad", 0) for p in pools) >= 1


def test_one_retry_loop_runs_a_transaction_again_after_a_deadlock_up_to_four_times():
    import asyncio

    from pyapp.web.database import attempts, transaction_failed_harmlessly

    tried: list[int] = []

    async def deadlocked(attempt: int) -> str:
        tried.append(attempt)
        raise psycopg.errors.DeadlockDetected("deadlock detected")

    with pytest.raises(psycopg.errors.DeadlockDetected):
        asyncio.run(attempts(deadlocked, transaction_failed_harmlessly))
    assert tried == [1, 2, 3, 4]

    async def third_time_lucky(attempt: int) -> str:
        if attempt < 3:
            raise psycopg.errors.SerializationFailure("could not serialize access")
        return "done"

    assert asyncio.run(attempts(third_time_lucky, transaction_failed_harmlessly)) == "done"

    async def other_error(attempt: int) -> str:
        tried.append(attempt)
        raise psycopg.errors.UniqueViolation("duplicate key")

    tried.clear()
    with pytest.raises(psycopg.errors.UniqueViolation):
        asyncio.run(attempts(other_error, transaction_failed_harmlessly))
    assert tried == [1]
