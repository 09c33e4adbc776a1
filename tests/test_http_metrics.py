"""GET /metrics (pyapp/web/metrics*.py): the Prometheus text, counters moved by known requests, the database's
gauges on known data, who may read it (passthrough serve --metrics-auth), and with two workers, counts added up."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import httpx
import orjson
import pytest
from http_helpers import TEST_CONFIG, create_key, json_headers, make_client
from live_server import serving
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families
from sqlhelpers import at, event, now, ts_at

from pyapp.web.metrics_auth import metrics_key_required
from pyapp.web.metrics_process import multiprocess_directory

pytest_plugins = ["http_fixtures"]

# the jobs run once at start (a sweep, a pruning run), then not again during a test
QUIET_JOBS = dataclasses.replace(TEST_CONFIG, expire_every=3600.0, prune_every=3600.0)
OPEN = dataclasses.replace(QUIET_JOBS, metrics_key_required=False)
JS_SDK = 'query {customer(fs_user_id : "u1") {audiences(subset: ["vip"]) {edges {node {name state}}}}}'


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of the exposition, read by prometheus_client's own parser: (name, labels) -> value."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(get, key: str | None = None) -> dict[tuple[str, frozenset], float]:
    response = get("/metrics", headers={"x-api-key": key} if key else {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=1.0.0; charset=utf-8"
    return samples(response.text)


def value(found, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def requests_of(found, route: str) -> dict[tuple[str, str], float]:
    """passthrough_http_requests_total of one route: (method, status) -> count."""
    return {(dict(labels)["method"], dict(labels)["status"]): v for (name, labels), v in found.items()
            if name == "passthrough_http_requests_total" and dict(labels)["route"] == route}


def wait_for_first_jobs(db) -> None:
    """The app's jobs run once when it starts: wait for that run (it ends with a pruning run), so that nothing
    the test stores afterwards is swept or pruned."""
    deadline = time.monotonic() + 15
    while db.execute("SELECT last_pruned_at FROM passthrough.settings").fetchone()[0] is None:
        assert time.monotonic() < deadline, "the app's first upkeep run did not happen"
        time.sleep(0.05)


# --------------------------------------------------------------------------- counters


@pytest.mark.parametrize("api_config", [dataclasses.replace(QUIET_JOBS, max_events=4)])
def test_counters_move_by_exactly_what_the_requests_did(client, enabled, private_key):
    headers = json_headers(private_key)
    # one batch of 3 events, 1 of them of another type (acknowledged, ignored), 2 memberships changed
    ok = client.post("/v3/events", headers=headers, json=[
        event(), event(identifiers={"fs_user_id": "user-2"}), event(type="fullstack", action="identified")])
    assert ok.status_code == 202 and (ok.json()["accepted"], ok.json()["ignored"], ok.json()["changed"]) == (2, 1, 2)
    # a batch of 2 refused for its content (one invalid event: all-or-nothing), and one of 5 over max_events
    invalid = client.post("/v3/events", headers=headers, json=[event(), event(action="promote")])
    too_many = client.post("/v3/events", headers=headers, json=[event()] * 5)
    # refused for their key, not their content: not counted as refused events. An unknown key is refused before
    # the body is read; a key this worker knows, revoked since, by the statement that applies the events
    unknown_key = client.post("/v3/events", headers=json_headers("no-such-key"), json=[event()])
    revoked_key = create_key(enabled, "soon-revoked", "private")
    assert client.post("/v3/events", headers=json_headers(revoked_key), json=[]).status_code == 202  # known now
    enabled.execute("SELECT passthrough.revoke_api_key('soon-revoked')")
    revoked = client.post("/v3/events", headers=json_headers(revoked_key), json=[event(), event()])
    assert (invalid.status_code, too_many.status_code, unknown_key.status_code, revoked.status_code) == (
        400, 413, 401, 401)
    assert client.get("/v3/segments/nope", headers={"x-api-key": private_key}).status_code == 404
    assert client.get("/no/such/path").status_code == 404

    found = scrape(client.get, private_key)
    assert value(found, "passthrough_events_total", outcome="accepted") == 2
    assert value(found, "passthrough_events_total", outcome="ignored") == 1
    assert value(found, "passthrough_events_total", outcome="refused") == 7
    assert value(found, "passthrough_batches_applied_total") == 2  # the empty one too
    assert value(found, "passthrough_memberships_changed_total") == 2
    assert requests_of(found, "/v3/events") == {("POST", "202"): 2, ("POST", "400"): 1, ("POST", "413"): 1,
                                               ("POST", "401"): 2}
    # the route's template, never the raw path; a path no route matches is "unmatched"
    assert requests_of(found, "/v3/segments/{segment_id}") == {("GET", "404"): 1}
    assert requests_of(found, "unmatched") == {("GET", "404"): 1}
    assert not any("nope" in str(labels) or "/no/such" in str(labels) for _, labels in found)
    assert value(found, "passthrough_http_request_duration_seconds_count", route="/v3/events") == 6
    assert value(found, "passthrough_http_request_duration_seconds_bucket", route="/v3/events", le="+Inf") == 6
    # the scrape itself is counted once it has been answered
    again = scrape(client.get, private_key)
    assert requests_of(again, "/metrics") == {("GET", "200"): 1}


def test_graphql_requests_count_under_their_route_on_the_fast_path_too(client, enabled, public_key):
    enabled.execute("SELECT passthrough.put_audience('vip', 'crm-vip')")
    body = orjson.dumps({"query": JS_SDK})
    headers = {"x-api-key": public_key, "content-type": "application/json"}
    for _ in range(3):  # the first checks the key; the next ones are answered by the fast path (fast.py)
        assert client.post("/v3/graphql", content=body, headers=headers).status_code == 200
    found = scrape(client.get, create_key(enabled, "scraper", "private"))
    assert requests_of(found, "/v3/graphql") == {("POST", "200"): 3}
    assert "unmatched" not in {dict(labels).get("route") for _, labels in found}


def test_pool_gauges_report_each_pool(client, private_key):
    # the read pool serves requests only (the background jobs use the write pool): hold one of its connections
    read_pool = client.app.state.pools["read"]
    held = client.portal.call(read_pool.getconn)
    try:
        found = scrape(client.get, private_key)
    finally:
        client.portal.call(read_pool.putconn, held)
    assert value(found, "passthrough_pool_connections_in_use", pool="read") == 1  # the scrape's own is back
    assert value(found, "passthrough_pool_requests_waiting", pool="read") == 0
    for pool in ("read", "write"):
        assert value(found, "passthrough_pool_connections_max", pool=pool) == 2  # TEST_CONFIG: 4 in all, halved
    assert value(scrape(client.get, private_key), "passthrough_pool_connections_in_use", pool="read") == 0


# --------------------------------------------------------------------------- the database's facts


@pytest.mark.parametrize("api_config", [OPEN])
def test_database_gauges_equal_the_known_data(client, enabled):
    wait_for_first_jobs(enabled)
    run = enabled.execute
    run("SELECT passthrough.put_audience('seg_a', 'aud-a')")
    run("SELECT passthrough.put_audience('seg_b', 'aud-b')")
    run("SELECT passthrough.set_audience_ttl('seg_a', interval '1 hour')")
    # paused, so that the app's delivery loop leaves them alone; every change of the feed is pending for both
    run("SELECT passthrough.create_webhook('all', 'https://hooks.example.com/all', NULL, false)")
    run("SELECT passthrough.create_webhook('only-b', 'https://hooks.example.com/b', ARRAY['seg_b'], false)")
    run("SELECT passthrough.pause_webhook('all'), passthrough.pause_webhook('only-b')")
    # 3 memberships of seg_a qualified 2 hours ago (their 1-hour ttl ran out, nobody swept them) and one 30 minutes ago
    for user, minutes in (("u1", -120), ("u2", -120), ("u3", -125), ("u4", -30)):
        run("SELECT passthrough.apply_event('fs_user_id', %s, 'aud-a', 'qualify', %s::numeric)", (user, at(minutes)))
    # the feed received them 10 minutes ago (under the test's clock); seg_b has no change at all
    run("UPDATE passthrough.batches SET received_at = %s", (ts_at(-10),))
    run("UPDATE passthrough.settings SET last_pruned_at = %s", (ts_at(-5),))

    found = scrape(client.get)
    # how far the clock has moved since the test started, and the millisecond at() may round a time down by
    elapsed = time.time() - now() + 0.001
    assert value(found, "passthrough_service_metrics_up") == 1
    assert value(found, "passthrough_expiry_backlog") == 3
    assert 600 <= value(found, "passthrough_webhook_lag_seconds", webhook="all") <= 600 + elapsed
    assert value(found, "passthrough_webhook_lag_seconds", webhook="only-b") == 0
    assert 300 <= value(found, "passthrough_retention_last_success_age_seconds") <= 300 + elapsed


@pytest.mark.parametrize("api_config", [OPEN])
def test_retention_age_is_absent_until_pruning_has_finished_a_run(client, db):
    wait_for_first_jobs(db)
    db.execute("UPDATE passthrough.settings SET last_pruned_at = NULL")
    found = scrape(client.get)
    assert value(found, "passthrough_service_metrics_up") == 1
    assert not any(name == "passthrough_retention_last_success_age_seconds" for name, _ in found)
    assert value(found, "passthrough_expiry_backlog") == 0


def test_without_the_database_the_process_metrics_are_still_answered():
    unreachable = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"
    with make_client(unreachable, dataclasses.replace(OPEN, pool_timeout=1.0)) as client:
        found = scrape(client.get)
    assert value(found, "passthrough_service_metrics_up") == 0
    assert not any(name == "passthrough_expiry_backlog" for name, _ in found)


# --------------------------------------------------------------------------- who may read it


def test_a_private_key_is_needed_by_default(client, public_key, private_key):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"x-api-key": "no-such-key"}).status_code == 401
    assert client.get("/metrics", headers={"x-api-key": public_key}).status_code == 403
    assert client.get("/metrics", headers={"x-api-key": private_key}).status_code == 200


@pytest.mark.parametrize("api_config", [OPEN])
def test_no_key_is_needed_when_the_setting_says_so(client):
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize(("mode", "host", "required"), [
    ("auto", "127.0.0.1", False), ("auto", "127.0.0.2", False), ("auto", "::1", False), ("auto", "localhost", False),
    ("auto", "0.0.0.0", True), ("auto", "::", True), ("auto", "10.1.2.3", True), ("auto", "api.example.com", True),
    ("key", "127.0.0.1", True), ("key", "0.0.0.0", True), ("none", "0.0.0.0", False), ("none", "127.0.0.1", False),
])
def test_the_metrics_auth_setting(mode, host, required):
    assert metrics_key_required(mode, host) is required


def test_serve_takes_the_setting_from_its_environment(db, http_database_url, tmp_path: Path, monkeypatch):
    private_key = create_key(db, "metrics-private", "private")
    monkeypatch.setenv("PASSTHROUGH_METRICS_AUTH", "key")  # on loopback, where auto would need none
    # left over from elsewhere, and not a directory: serve does not use it
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "absent"))
    with serving(http_database_url, tmp_path, "--workers", "1") as base:
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 401
        assert httpx.get(f"{base}/metrics", headers={"x-api-key": private_key}, timeout=10).status_code == 200


# --------------------------------------------------------------------------- several workers


def test_the_workers_metrics_live_in_shared_memory_unless_tmpdir_says_otherwise(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("TMPDIR", raising=False)
    with multiprocess_directory() as path:
        assert Path(path).parent == Path("/dev/shm")  # Linux: memory-backed, never written back to a disk
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == path
    assert not Path(path).exists()
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # an operator's choice wins
    with multiprocess_directory() as path:
        assert Path(path).parent == tmp_path


def accepted_by_worker(metrics_dir: Path) -> dict[str, float]:
    """Events each worker counted as accepted, read from its own file (prometheus-client's multiprocess format):
    pid -> count."""
    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        for key, count, *_ in MmapedDict.read_all_values_from_file(str(path)):
            _, sample, labels, _ = orjson.loads(key)  # metric, sample, labels, help
            if sample == "passthrough_events_total" and labels.get("outcome") == "accepted":
                counts[path.stem.removeprefix("counter_")] = count
    return counts


def test_two_workers_add_their_counts_up(db, http_database_url, tmp_path: Path, monkeypatch):
    db.execute("SELECT passthrough.enable()")
    private_key = create_key(db, "metrics-private", "private")
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # where serve makes its private metrics directory
    batch = [event(), event(identifiers={"fs_user_id": "user-2"}), event(type="fullstack", action="identified")]
    with serving(http_database_url, tmp_path, "--workers", "2") as base:  # 127.0.0.1, --metrics-auth auto: no key
        get = lambda path, **kw: httpx.get(base + path, timeout=10, **kw)  # noqa: E731
        [metrics_dir] = temp.glob("passthrough-metrics-*")
        assert metrics_dir.stat().st_mode & 0o077 == 0  # private
        sent, deadline = 0, time.monotonic() + 20
        # a new connection each, which the kernel hands to either worker, until both have taken some
        while sent < 10 or len([n for n in accepted_by_worker(metrics_dir).values() if n]) < 2:
            assert time.monotonic() < deadline, accepted_by_worker(metrics_dir)
            response = httpx.post(f"{base}/v3/events", headers=json_headers(private_key), json=batch, timeout=10)
            assert response.status_code == 202
            sent += 1
        pids = pool_gauge_pids(get, lambda found: len(found) == 2)
        assert pids == set(accepted_by_worker(metrics_dir))
        for _ in range(3):  # whichever worker answers, the totals are everyone's
            found = scrape(get)
            assert value(found, "passthrough_events_total", outcome="accepted") == 2 * sent
            assert value(found, "passthrough_events_total", outcome="ignored") == sent
            assert value(found, "passthrough_batches_applied_total") == sent
            assert requests_of(found, "/v3/events") == {("POST", "202"): sent}
        # a worker killed: serve replaces it; its gauges leave the metrics, its counts stay in the totals
        killed = min(pids)
        os.kill(int(killed), signal.SIGKILL)
        replaced = pool_gauge_pids(get, lambda found: len(found) == 2 and killed not in found)
        assert killed not in replaced and len(replaced) == 2
        found = scrape(get)
        assert value(found, "passthrough_events_total", outcome="accepted") == 2 * sent
        assert value(found, "passthrough_batches_applied_total") == sent
    assert list(temp.glob("passthrough-metrics-*")) == []  # removed when serving ended


def pool_gauge_pids(get, done, seconds: float = 20) -> set[str]:
    """The worker pids the pool gauges show, once ``done(pids)`` (each worker writes them every second)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            found = scrape(get)
        except httpx.TransportError:  # the killed worker's connection
            found = {}
        pids = {dict(labels)["pid"] for name, labels in found if name == "passthrough_pool_connections_max"}
        if done(pids) or time.monotonic() > deadline:
            return pids
        time.sleep(0.2)
