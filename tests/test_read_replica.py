"""Read replicas (docs/operations.md, "Read replicas"): with ``read_database_url``, GraphQL, segment listings and
member pages read on a real streaming replica (tests/replica_fixtures.py), everything else on the primary.

The proof that a read went to the replica: replay is paused there, a write goes through the API, and the read
still shows the state before it while the primary shows the new one; once replay resumes, the read shows it too.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from http_helpers import TEST_CONFIG, create_key, json_headers, make_client
from live_server import serving
from sqlhelpers import event

from pyapp.db import connect

pytest_plugins = ["replica_fixtures"]


def js_query(user_id: str, segments: list[str]) -> str:
    """The JavaScript SDK's query, literals inline: answered by the compiled fast path (fast.py)."""
    subset = ",".join(f'"{s}"' for s in segments)
    return f'query {{customer(fs_user_id : "{user_id}") {{audiences(subset: [{subset}]) {{edges {{node {{name state}}}}}}}}}}'


@pytest.fixture
def primary(replica_pair: Any) -> Iterator[psycopg.Connection]:
    """The primary's database, passthrough on; replay running again after the test, whatever it did."""
    with connect(replica_pair.primary_url, autocommit=True) as conn:
        conn.execute("SELECT passthrough.enable()")
        yield conn
    replica_pair.resume_replay()


@pytest.fixture(params=["compiled", "general"])
def client(request: pytest.FixtureRequest, replica_pair: Any, primary: psycopg.Connection) -> Iterator[Any]:
    """The app with the replica as its read database: GraphQL through its compiled plans, and through
    graphql-core's executor."""
    config = dataclasses.replace(TEST_CONFIG, read_database_url=replica_pair.replica_url,
                                 graphql_compiled=request.param == "compiled")
    with make_client(replica_pair.primary_url, config) as test_client:
        yield test_client


@pytest.fixture
def names() -> tuple[str, str, str]:
    """A segment, its external audience id and a user, new for each test (the tests share one database)."""
    tag = uuid.uuid4().hex[:10]
    return f"seg_{tag}", f"aud-{tag}", f"user-{tag}"


def graphql(client: Any, key: str, user: str, segment: str) -> httpx.Response:
    return client.post("/v3/graphql", content=orjson.dumps({"query": js_query(user, [segment])}),
                       headers={"content-type": "application/json", "x-api-key": key})


def states(response: httpx.Response) -> list[tuple[str, str]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return [(e["node"]["name"], e["node"]["state"]) for e in body["data"]["customer"]["audiences"]["edges"]]


def on_primary(conn: psycopg.Connection, user: str, segment: str) -> list[tuple[str, str]]:
    return conn.execute("SELECT name, state FROM passthrough.customer_audiences('fs_user_id', %s, %s::text[])",
                        (user, [segment])).fetchall()


def test_graphql_reads_the_replica_and_events_go_to_the_primary(client, replica_pair, primary, names):
    segment, audience, user = names
    admin = json_headers(create_key(primary, f"admin-{segment}", "private"))
    public = create_key(primary, f"public-{segment}", "public")
    body = {"definition": {"external": {"external_audience_id": audience}}}
    assert client.put(f"/v3/segments/{segment}", json=body, headers=admin).status_code == 200
    replica_pair.caught_up()
    assert states(graphql(client, public, user, segment)) == []  # not a member: no edge

    replica_pair.pause_replay()
    qualify = event(identifiers={"fs_user_id": user}, data_audience_id=audience)
    assert client.post("/v3/events", json=[qualify], headers=admin).status_code == 202
    assert on_primary(primary, user, segment) == [(segment, "qualified")]  # the write is on the primary
    for _ in range(2):  # the first request checks the key on its own; the second is the hot one (fast path)
        assert states(graphql(client, public, user, segment)) == []  # the replica

    replica_pair.resume_replay()
    replica_pair.caught_up()
    assert states(graphql(client, public, user, segment)) == [(segment, "qualified")]


def test_a_revoked_key_is_refused_at_once_though_the_replica_lags(client, replica_pair, primary, names):
    segment, audience, user = names
    public = create_key(primary, f"public-{segment}", "public")
    private = create_key(primary, f"private-{segment}", "private")
    replica_pair.caught_up()
    assert graphql(client, public, user, segment).status_code == 200  # the worker now knows the key (auth.py)
    assert client.get("/v3/segments", headers=json_headers(private)).status_code == 200

    replica_pair.pause_replay()
    primary.execute("SELECT passthrough.revoke_api_key(%s)", (f"public-{segment}",))
    primary.execute("SELECT passthrough.revoke_api_key(%s)", (f"private-{segment}",))
    refused = graphql(client, public, user, segment)
    assert refused.status_code == 401, refused.text
    assert refused.json()["errors"][0]["extensions"]["code"] == "INVALID_API_KEY"
    assert client.get("/v3/segments", headers=json_headers(private)).status_code == 401
    members = client.get(f"/v3/segments/{segment}/members", headers=json_headers(private))
    assert members.status_code == 401


def test_segment_listings_and_member_pages_read_the_replica(client, replica_pair, primary, names):
    segment, audience, user = names
    admin = json_headers(create_key(primary, f"admin-{segment}", "private"))
    replica_pair.caught_up()
    replica_pair.pause_replay()
    body = {"definition": {"external": {"external_audience_id": audience}}}
    assert client.put(f"/v3/segments/{segment}", json=body, headers=admin).status_code == 200
    qualify = event(identifiers={"fs_user_id": user}, data_audience_id=audience)
    assert client.post("/v3/events", json=[qualify], headers=admin).status_code == 202

    # GET /v3/segments/{id} reads the primary: an admin reads back what they just saved
    assert client.get(f"/v3/segments/{segment}", headers=admin).json()["size"] == 1
    assert segment not in client.get("/v3/segments", headers=admin).json()["segment_ids"]
    assert client.get(f"/v3/segments/{segment}/members", headers=admin).status_code == 404

    replica_pair.resume_replay()
    replica_pair.caught_up()
    assert segment in client.get("/v3/segments", headers=admin).json()["segment_ids"]
    page = client.get(f"/v3/segments/{segment}/members", headers=admin)
    assert page.status_code == 200, page.text
    assert [orjson.loads(line)["identifier"] for line in page.content.splitlines()] == [user]



def test_the_change_feed_reads_the_primary(client, replica_pair, primary, names):
    """The feed's cursor rests on the primary's transaction ids: GET /v3/changes never reads the replica."""
    segment, audience, user = names
    admin = json_headers(create_key(primary, f"admin-{segment}", "private"))
    primary.execute("SELECT passthrough.create_audience(%s, %s)", (segment, audience))
    start = client.get("/v3/changes", headers=admin).json()["next"]
    replica_pair.caught_up()
    replica_pair.pause_replay()
    qualify = event(identifiers={"fs_user_id": user}, data_audience_id=audience)
    assert client.post("/v3/events", json=[qualify], headers=admin).status_code == 202
    changes = client.get("/v3/changes", params={"after": start}, headers=admin).json()["changes"]
    assert [(c["identifier"], c["audience_id"]) for c in changes] == [(user, audience)], changes

def test_readyz_reports_the_replicas_replay_lag(client, replica_pair, primary):
    replica_pair.caught_up()
    ready = client.get("/readyz").json()
    assert ready["replica"] == {"reachable": True, "in_recovery": True, "replay_paused": False,
                                "replay_lag_bytes": 0, "replay_lag_seconds": 0}

    replica_pair.pause_replay()
    primary.execute("SELECT passthrough.set_setting('public_passthrough_events', 'off')")  # WAL to replay
    lagging = client.get("/readyz")
    assert lagging.status_code == 200
    replica = lagging.json()["replica"]
    assert replica["replay_paused"] is True and replica["replay_lag_bytes"] > 0, replica
    assert replica["replay_lag_seconds"] is None or replica["replay_lag_seconds"] >= 0, replica


def test_readyz_stays_ready_when_the_replica_is_unreachable(replica_pair, primary):
    with socket_closed_port() as port:
        config = dataclasses.replace(TEST_CONFIG, read_database_url=f"postgresql://postgres@127.0.0.1:{port}/x",
                                     pool_timeout=1.0)
        with make_client(replica_pair.primary_url, config) as test_client:
            response = test_client.get("/readyz")
    assert response.status_code == 200, response.text
    replica = response.json()["replica"]
    assert replica["reachable"] is False and replica["error"], replica
    assert str(port) not in response.text  # /readyz is public: no address of the replica


def test_serve_reads_the_replica_named_by_the_environment(replica_pair, primary, names, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    segment, audience, user = names
    admin = json_headers(create_key(primary, f"admin-{segment}", "private"))
    replica_pair.caught_up()
    monkeypatch.setenv("PASSTHROUGH_READ_DATABASE_URL", replica_pair.replica_url)
    with serving(replica_pair.primary_url, tmp_path, "--workers", "1") as base:
        assert httpx.get(f"{base}/readyz").json()["replica"]["reachable"] is True
        replica_pair.pause_replay()
        body = {"definition": {"external": {"external_audience_id": audience}}}
        assert httpx.put(f"{base}/v3/segments/{segment}", json=body, headers=admin).status_code == 200
        assert segment not in httpx.get(f"{base}/v3/segments", headers=admin).json()["segment_ids"]
    assert "reads:        GraphQL, segment listings and member pages on the streaming replica" in "".join(
        path.read_text() for path in tmp_path.glob("serve-*.log"))


def test_serve_refuses_a_read_database_it_cannot_reach(replica_pair):
    with socket_closed_port() as port:
        done = subprocess.run(
            [sys.executable, "-m", "pyapp.cli", "serve", "--database-url", replica_pair.primary_url, "--no-migrate",
             "--port", "1", "--read-database-url", f"postgresql://postgres@127.0.0.1:{port}/x"],
            capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "error: --read-database-url: cannot connect" in done.stderr, done.stderr


def socket_closed_port() -> Any:
    """A context: a 127.0.0.1 port nothing listens on while it lasts (bound, not listening)."""
    import socket
    from contextlib import contextmanager

    @contextmanager
    def held() -> Iterator[int]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            yield sock.getsockname()[1]

    return held()
