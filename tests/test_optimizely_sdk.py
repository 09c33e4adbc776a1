"""The real Optimizely Python SDK (optimizely-sdk, a test dependency) against a running Passthrough.

A uvicorn server runs the app on 127.0.0.1 on a free port, offline. The SDK is pointed at it by
its datafile alone (the ``odp`` integration entry), sends passthrough events through its own ODP
event queue to /v3/events, and reads the qualified segments through /v3/graphql with the exact
query it always sends. A no-op event dispatcher keeps it from calling anything else.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
import uvicorn
from http_helpers import create_key
from optimizely import optimizely
from optimizely.helpers.sdk_settings import OptimizelySdkSettings

from pyapp.web import ApiConfig, create_app

TS = 1_700_000_000
SEGMENTS = {"seg_gold": "crm-gold", "seg_silver": "crm-silver", "seg_bronze": "crm-bronze"}


class NoOpEventDispatcher:
    def dispatch_event(self, event: object) -> None:
        pass


def datafile(host: str, public_key: str) -> str:
    """A minimal datafile the SDK accepts: the odp integration and one audience per segment."""
    audiences = [
        {
            "id": str(1000 + i),
            "name": f"in {segment}",
            "conditions": ["and", ["or", ["or", {
                "type": "third_party_dimension", "name": "odp.audiences", "match": "qualified", "value": segment,
            }]]],
        }
        for i, segment in enumerate(SEGMENTS)
    ]
    return json.dumps({
        "version": "4", "accountId": "1", "projectId": "1", "revision": "1",
        "experiments": [], "featureFlags": [], "rollouts": [], "groups": [], "attributes": [], "events": [],
        "audiences": [],
        "typedAudiences": audiences,
        "integrations": [{"key": "odp", "host": host, "publicKey": public_key}],
    })


@pytest.fixture
def server(db_url: str) -> Iterator[str]:
    """Passthrough served by uvicorn in a thread; yields its base URL (no trailing slash)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(db_url, config=ApiConfig(pool_min_size=1, pool_max_size=4))
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, name="passthrough-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(20)
        sock.close()


@pytest.fixture
def sdk_log(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    caplog.set_level(logging.DEBUG, logger="optimizely-sdk-test")
    return logging.getLogger("optimizely-sdk-test")


def wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def qualified_in_db(conn: psycopg.Connection, user: str) -> list[str]:
    return [name for (name,) in conn.execute(
        "SELECT name FROM passthrough.customer_audiences('fs_user_id', %s)", (user,)
    ).fetchall()]


def test_the_python_sdk_sends_events_and_fetches_exactly_the_qualified_segments(
    conn, server, sdk_log, caplog
):
    conn.execute("SELECT passthrough.enable()")
    # the SDK sends with the public key of its datafile: a site that does this must allow it (README)
    conn.execute("SELECT passthrough.set_setting('public_passthrough_events', 'on')")
    for segment, external_id in SEGMENTS.items():
        if segment != "seg_bronze":  # the datafile asks about a segment Passthrough does not define
            conn.execute("SELECT passthrough.create_audience(%s, %s)", (segment, external_id))
    public_key = create_key(conn, "sdk", "public")

    client = optimizely.Optimizely(
        datafile=datafile(server, public_key),
        event_dispatcher=NoOpEventDispatcher(),
        logger=sdk_log,
        settings=OptimizelySdkSettings(odp_event_flush_interval=0),  # send each event at once
    )
    assert client.is_valid
    try:
        def send(action: str, audience_id: str, ts: int, user: str = "user-1") -> None:
            client.send_odp_event(
                type="passthrough", action=action, identifiers={"fs_user_id": user},
                data={"audience_id": audience_id, "ts": ts},
            )

        def fetch(user: str = "user-1") -> list[str] | None:
            context = client.create_user_context(user)
            if not context.fetch_qualified_segments(options=["IGNORE_CACHE"]):
                return None
            return context.get_qualified_segments()

        assert fetch() == []  # no membership at all: an empty answer, not a failure

        send("qualify", "crm-gold", TS)
        send("qualify", "crm-silver", TS)
        wait_for(lambda: qualified_in_db(conn, "user-1") == ["seg_gold", "seg_silver"])
        assert fetch() == ["seg_gold", "seg_silver"]

        send("disqualify", "crm-gold", TS + 1)
        send("qualify", "crm-bronze", TS)  # stored, but no definition: never answered
        wait_for(lambda: conn.execute("SELECT count(*) FROM passthrough.events").fetchone()[0] == 4)
        assert fetch() == ["seg_silver"]
        context = client.create_user_context("user-1")
        assert context.fetch_qualified_segments(options=["IGNORE_CACHE"])
        assert context.is_qualified_for("seg_silver") and not context.is_qualified_for("seg_gold")

        send("qualify", "crm-gold", TS)  # older than the disqualify: changes nothing
        wait_for(lambda: conn.execute("SELECT count(*) FROM passthrough.events").fetchone()[0] == 5)
        assert fetch() == ["seg_silver"]
        assert fetch("someone-else") == []

        # The SDK recognises our invalid identifier error by its extensions.code.
        caplog.clear()
        assert fetch("") is None
        assert "Audience segments fetch failed (invalid identifier)." in [r.getMessage() for r in caplog.records]
    finally:
        client.close()

    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert problems == []
    # Every event the SDK sent reached /v3/events through its own queue, with the idempotence_id it adds.
    stored = conn.execute("SELECT count(*), count(DISTINCT idempotence_id) FROM passthrough.events").fetchone()
    assert stored == (5, 5)
