"""/healthz, /readyz, the database being unavailable, and `passthrough serve` as a real process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from http_helpers import TEST_CONFIG, json_headers, make_client
from sqlhelpers import event

from pyapp.web import ApiConfig
from pyapp.web.openapi.document import DOCUMENT

pytest_plugins = ["http_fixtures"]

FAST_TIMEOUT = ApiConfig(pool_min_size=1, pool_max_size=2, pool_timeout=0.3)


def test_healthz_answers_without_the_database(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_reports_ready_and_the_switch(client, db):
    assert client.get("/readyz").json() == {"status": "ready", "passthrough_enabled": False}
    db.execute("SELECT passthrough.enable()")
    assert client.get("/readyz").json() == {"status": "ready", "passthrough_enabled": True}


def test_readyz_is_503_for_a_database_without_the_migrations(fresh_db_url):
    with make_client(fresh_db_url, TEST_CONFIG) as client:
        response = client.get("/readyz")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    detail = response.json()["detail"]
    assert detail["code"] == "not_migrated"
    assert "passthrough--0.1.0.sql" in detail["message"] and "passthrough migrate" in detail["message"]


def test_readyz_exercises_plpgsql(conn):
    """/readyz calls passthrough.is_enabled(), which is PL/pgSQL like every write: a server that cannot load
    PL/pgSQL (its binaries upgraded under it: 58P01) is not ready."""
    assert conn.execute("SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang"
                        " WHERE p.oid = 'passthrough.is_enabled()'::regprocedure").fetchone() == ("plpgsql",)


def test_readyz_is_503_when_plpgsql_calls_fail(db_url, conn):
    # what a PL/pgSQL call answers when its library can no longer be loaded
    conn.execute("""CREATE OR REPLACE FUNCTION passthrough.is_enabled() RETURNS boolean LANGUAGE plpgsql AS $$
                    BEGIN RAISE EXCEPTION USING ERRCODE = '58P01',
                      MESSAGE = 'could not access file "$libdir/plpgsql": No such file or directory'; END $$""")
    with make_client(db_url, TEST_CONFIG) as client:
        response = client.get("/readyz")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    detail = response.json()["detail"]
    assert detail["code"] == "not_ready" and "58P01" in detail["message"] and "plpgsql" in detail["message"]


@pytest.fixture
def unreachable_url(tmp_path):
    """A database URL where nothing listens: every connection attempt is refused at once."""
    return f"postgresql://postgres@/postgres?host={tmp_path}"


def secured_operations():
    return [
        (path, method.upper())
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        if operation["security"]
    ]


def test_every_database_route_is_503_while_the_database_is_unreachable(unreachable_url, tmp_path):
    with make_client(unreachable_url, FAST_TIMEOUT) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["detail"]["code"] == "database_unavailable"
        headers = json_headers("pt_private_" + "1" * 64)
        for path, method in secured_operations():
            url = path.replace("{segment_id}", "seg_a")
            response = client.request(method, url, headers=headers, json=[event()])
            assert response.status_code == 503, (method, path, response.text)
            assert response.headers["retry-after"] == "1"
            assert str(tmp_path) not in response.text  # the message does not reveal where the database is


# --------------------------------------------------------------------------- passthrough serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pyapp.cli", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_until_up(process: subprocess.Popen[str], base: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("passthrough serve did not start")


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, output


def test_serve_migrates_serves_and_stops_cleanly_on_sigterm(fresh_db_url):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server("--database-url", fresh_db_url, env={"PASSTHROUGH_PORT": str(port)})
    try:
        wait_until_up(process, base)
        assert httpx.get(f"{base}/readyz").json() == {"status": "ready", "passthrough_enabled": False}
        response = httpx.post(f"{base}/v3/events", json=[event()], headers={"x-api-key": "nope"})
        assert response.status_code == 401 and response.headers["content-type"] == "application/json"
    finally:
        code, output = stop(process)
    assert code == 0, output
    assert "migrations: applied" in output and f"http://127.0.0.1:{port}" in output


def test_serve_no_migrate_leaves_the_database_alone(fresh_db_url):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server("--database-url", fresh_db_url, "--port", str(port), "--no-migrate")
    try:
        wait_until_up(process, base)
        assert httpx.get(f"{base}/readyz").json()["detail"]["code"] == "not_migrated"
    finally:
        code, output = stop(process)
    assert code == 0, output
    assert "migrations: skipped" in output
