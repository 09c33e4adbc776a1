"""Many writers at once, through every path, on the same users and audiences.

* HTTP clients (a real ``passthrough serve`` process), ``passthrough load`` with several writer
  connections (a real CLI process) and direct SQL callers (apply_events, apply_event), all at once, on
  overlapping users and audiences in random orders: the final state equals the reference model, sizes
  are exact, and no client ever sees a deadlock or any other error.
* Segment updates racing with events for the same audience: every PUT gets its own revision (no lost
  update), each client's revisions strictly increase, readers never see a revision go backwards.
* A real deadlock involving an HTTP request is retried inside the server: the client gets 202, the
  batch is stored once; a transaction that keeps failing is retried a bounded number of times, then 503.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import psycopg
import pytest
from http_helpers import json_headers
from sqlhelpers import event, stored_counts
from live_server import serving

from pyapp.web.database import MAX_TRANSACTION_ATTEMPTS
from reference_model import Event, MembershipModel, dumps

pytest_plugins = ["http_fixtures"]

USERS = 50
AUDIENCES = [f"aud-{i}" for i in range(5)]  # aud-4 has no definition
HTTP_CLIENTS = 4
HTTP_BATCHES = 25
SQL_CALLERS = 2
SQL_BATCHES = 25
SINGLE_EVENTS = 100
LOAD_EVENTS = 3000
LOAD_WRITERS = 3


def random_events(rng: random.Random, n: int) -> list[Event]:
    return [
        Event("fs_user_id", f"u{rng.randrange(USERS)}", rng.choice(AUDIENCES), rng.random() < 0.55,
              Decimal(1_700_000_000 + rng.randrange(3000)) + Decimal(rng.randrange(4)) / 4)
        for _ in range(n)
    ]


def sizes_and_state(conn) -> tuple[dict[str, int], dict[tuple[str, str], tuple[bool, Decimal]]]:
    sizes = dict(conn.execute("SELECT external_audience_id, size FROM passthrough.list_audiences()").fetchall())
    state = {(i, a): (q, ts) for i, a, q, ts in conn.execute(
        "SELECT m.identifier, x.external_id, m.qualified, extract(epoch FROM m.event_ts) FROM passthrough.memberships m"
        " JOIN passthrough.external_audiences x ON x.id = m.audience_key").fetchall()}
    return sizes, state


def model_state(model: MembershipModel) -> dict[tuple[str, str], tuple[bool, Decimal]]:
    return {(i, a): (q, Decimal(us) / 1_000_000) for (_, i, a), (us, q) in model.state.items()}


@pytest.fixture
def live(db_url, tmp_path):
    with psycopg.connect(db_url, autocommit=True) as owner:
        owner.execute("SELECT passthrough.enable()")
        # these writers stand for SDKs in web pages, whose public keys a site must allow to send passthrough events
        owner.execute("SELECT passthrough.set_setting('public_passthrough_events', 'on')")
        for i, audience in enumerate(AUDIENCES[:-1]):
            owner.execute("SELECT passthrough.put_audience(%s, %s)", (f"seg_{i}", audience))
        public = owner.execute("SELECT passthrough.create_api_key('pub', 'public')").fetchone()[0]
        private = owner.execute("SELECT passthrough.create_api_key('priv', 'private')").fetchone()[0]
    with serving(db_url, tmp_path) as base:
        yield base, public, private


def test_http_load_and_sql_writers_at_once_reach_the_model_state(db_url, live, tmp_path):
    base, key, _ = live
    rng = random.Random(20260602)
    http_streams = [[random_events(rng, rng.randrange(1, 50)) for _ in range(HTTP_BATCHES)] for _ in range(HTTP_CLIENTS)]
    sql_streams = [[random_events(rng, rng.randrange(1, 50)) for _ in range(SQL_BATCHES)] for _ in range(SQL_CALLERS)]
    singles = random_events(rng, SINGLE_EVENTS)
    loaded = random_events(rng, LOAD_EVENTS)
    data = tmp_path / "events.ndjson"
    data.write_text("".join(dumps(e.as_json()) + "\n" for e in loaded))

    start = threading.Barrier(HTTP_CLIENTS + SQL_CALLERS + 2)
    problems: list[str] = []
    lock_waits = []

    def http_writer(stream):
        with httpx.Client(base_url=base, timeout=60) as http:
            start.wait()
            for batch in stream:
                response = http.post("/v3/events", content=dumps([e.as_json() for e in batch]),
                                     headers=json_headers(key))
                if response.status_code != 202:
                    problems.append(f"HTTP {response.status_code}: {response.text[:200]}")

    def sql_writer(stream):
        with psycopg.connect(db_url, autocommit=True) as conn:
            start.wait()
            for batch in stream:
                conn.execute("SELECT passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in batch]),))

    def single_writer():
        with psycopg.connect(db_url, autocommit=True) as conn:
            start.wait()
            for e in singles:
                conn.execute("SELECT passthrough.apply_event(%s, %s, %s, %s, %s)",
                             (e.identifier_type, e.identifier, e.audience_id,
                              "qualify" if e.qualified else "disqualify", e.ts))

    def guarded(fn, *args):
        try:
            fn(*args)
        except BaseException as exc:
            problems.append(f"{fn.__name__}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=guarded, args=(http_writer, s)) for s in http_streams]
    threads += [threading.Thread(target=guarded, args=(sql_writer, s)) for s in sql_streams]
    threads += [threading.Thread(target=guarded, args=(single_writer,))]
    for t in threads:
        t.start()
    start.wait()
    loader = subprocess.Popen(
        [sys.executable, "-m", "pyapp.cli", "load", "--database-url", db_url, "--writers", str(LOAD_WRITERS),
         "--batch-size", "150", "--quiet", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    with psycopg.connect(db_url, autocommit=True) as watcher:
        while (any(t.is_alive() for t in threads) or loader.poll() is None) and time.monotonic() < deadline:
            lock_waits.append(watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()").fetchone()[0])
            time.sleep(0.01)
    for t in threads:
        t.join(120)
    output, _ = loader.communicate(timeout=60)
    assert loader.returncode == 0, output[-2000:]
    assert problems == []

    model = MembershipModel()
    model.apply(e for s in http_streams for b in s for e in b)
    model.apply(e for s in sql_streams for b in s for e in b)
    model.apply(singles)
    model.apply(loaded)
    with psycopg.connect(db_url, autocommit=True) as conn:
        sizes, state = sizes_and_state(conn)
        assert state == model_state(model)
        assert sizes == {a: model.sizes().get(a, 0) for a in AUDIENCES[:-1]}
        counted = dict(conn.execute(
            "SELECT x.external_id, count(*) FROM passthrough.memberships m JOIN passthrough.external_audiences x"
            " ON x.id = m.audience_key WHERE m.qualified GROUP BY 1").fetchall())
        assert counted == model.sizes()
        total = sum(len(b) for s in (*http_streams, *sql_streams) for b in s) + SINGLE_EVENTS + LOAD_EVENTS
        assert conn.execute("SELECT count(*) FROM passthrough.events").fetchone()[0] == total
        deadlocks = conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]
    writers = HTTP_CLIENTS + SQL_CALLERS + 1 + LOAD_WRITERS
    print(f"\nFIGURES concurrency: {writers} writers in parallel ({HTTP_CLIENTS} HTTP, {LOAD_WRITERS} load,"
          f" {SQL_CALLERS + 1} SQL); {total} events; up to {max(lock_waits, default=0)} sessions waiting on a lock"
          f" at once; deadlocks detected by PostgreSQL {deadlocks}; errors seen by clients 0")


def test_segment_updates_racing_with_events_lose_no_update(db_url, live):
    base, public, private = live
    writers, puts_each, readers = 4, 15, 2
    assert httpx.post(f"{base}/v3/segments/seg_race", headers=json_headers(private),
                      json={"definition": {"external": {"external_audience_id": "aud-race"}}}).json() == {"revision": 1}
    rng = random.Random(7)
    events = [Event("fs_user_id", f"u{rng.randrange(30)}", "aud-race", rng.random() < 0.6,
                    Decimal(1_700_000_000 + rng.randrange(500))) for _ in range(600)]
    returned: dict[int, list[tuple[int, str]]] = {}
    seen: dict[int, list[int]] = {}
    problems: list[str] = []
    done = threading.Event()

    def putter(w):
        mine = returned.setdefault(w, [])
        with httpx.Client(base_url=base, timeout=60) as http:
            for n in range(puts_each):
                description = f"writer {w} update {n}"
                response = http.put("/v3/segments/seg_race", headers=json_headers(private), json={
                    "definition": {"external": {"external_audience_id": "aud-race"}},
                    "description": description, "metadata": {"w": w, "n": n}})
                if response.status_code != 200:
                    problems.append(f"PUT {response.status_code} {response.text[:200]}")
                    return
                mine.append((response.json()["revision"], description))

    def poster(chunk):
        with httpx.Client(base_url=base, timeout=60) as http:
            for i in range(0, len(chunk), 20):
                response = http.post("/v3/events", headers=json_headers(public),
                                     content=dumps([e.as_json() for e in chunk[i:i + 20]]))
                if response.status_code != 202:
                    problems.append(f"POST {response.status_code} {response.text[:200]}")

    def reader(r):
        mine = seen.setdefault(r, [])
        with httpx.Client(base_url=base, timeout=60) as http:
            while not done.is_set():
                response = http.get("/v3/segments/seg_race", headers={"x-api-key": private})
                if response.status_code != 200:
                    problems.append(f"GET {response.status_code}")
                    return
                mine.append(response.json()["revision"])

    with ThreadPoolExecutor(writers + 2 + readers) as pool:
        reads = [pool.submit(reader, r) for r in range(readers)]
        work = [pool.submit(putter, w) for w in range(writers)]
        work += [pool.submit(poster, events[k::2]) for k in range(2)]
        for f in work:
            f.result(timeout=120)
        done.set()
        for f in reads:
            f.result(timeout=60)
    assert problems == []
    revisions = [rev for w in returned.values() for rev, _ in w]
    assert sorted(revisions) == list(range(2, 2 + writers * puts_each)), "two updates got the same revision"
    for w in returned.values():
        assert [rev for rev, _ in w] == sorted(rev for rev, _ in w) and len({r for r, _ in w}) == len(w)
    for r in seen.values():
        assert r == sorted(r), "a reader saw the revision go backwards"
    final = httpx.get(f"{base}/v3/segments/seg_race", headers={"x-api-key": private}).json()
    last_revision, last_description = max(d for w in returned.values() for d in w)
    assert final["revision"] == last_revision == 1 + writers * puts_each
    assert final["description"] == last_description
    model = MembershipModel()
    model.apply(events)
    assert final["size"] == model.sizes().get("aud-race", 0)
    print(f"\nFIGURES segment race: {writers} PUT writers x {puts_each} updates, 2 event posters"
          f" ({len(events)} events), {readers} readers ({sum(len(v) for v in seen.values())} reads); revisions"
          f" 1..{final['revision']} each given once")


# --------------------------------------------------------------------------- retries inside the server


def wait_for(query, conn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(query).fetchone()
        if row is not None:
            return row
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for: {query}")


@pytest.mark.single_node("the victim is chosen by a session's deadlock_timeout and the deadlock counted in"
                         " pg_stat_database; on Citus the cycle spans the nodes and their detectors (docs/scale-out.md,"
                         " The writer on Citus: Deadlocks)")
def test_a_real_deadlock_is_retried_inside_the_server(client, enabled, private_key, http_database_url):
    """The request's transaction and another one wait for each other; PostgreSQL picks the request's as the
    victim (its deadlock_timeout expires first); the server runs it again and answers 202."""
    headers = json_headers(private_key)
    assert client.post("/v3/events", headers=headers, json=[event(identifiers={"fs_user_id": "dl"})]).status_code == 202
    deadlocks_before = enabled.execute(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]
    batch = [event(identifiers={"fs_user_id": "dl"}, data_ts=1_700_000_100),
             event(identifiers={"fs_user_id": "other"}, data_audience_id="aud-new")]
    with psycopg.connect(http_database_url) as other, ThreadPoolExecutor(2) as pool:
        other.execute("SET LOCAL deadlock_timeout = '30s'")  # so that the request's transaction is the victim
        other.execute("SELECT 1 FROM passthrough.memberships WHERE identifier = 'dl' FOR UPDATE")
        pending = pool.submit(client.post, "/v3/events", headers=headers, json=batch)
        # the request has inserted the new audience id "aud-new" (uncommitted) and waits for the row "dl"
        wait_for("SELECT pid FROM pg_stat_activity WHERE application_name = 'passthrough-http'"
                 " AND wait_event_type = 'Lock'", enabled)
        # now this transaction waits for the request's "aud-new": a cycle
        inserting = pool.submit(other.execute,
                                "INSERT INTO passthrough.external_audiences (external_id) VALUES ('aud-new')")
        inserting.result(timeout=30)  # the request's transaction was rolled back: the cycle is broken
        other.rollback()
        response = pending.result(timeout=30)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 2
    assert stored_counts(enabled) == (2, 3, 2)  # the batch once, on top of the first one
    deadline = time.monotonic() + 10
    while enabled.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
                          ).fetchone()[0] == deadlocks_before:
        assert time.monotonic() < deadline, "PostgreSQL never detected the deadlock"
        time.sleep(0.1)


@pytest.fixture
def failing_attempts(enabled):
    """A trigger that fails the first N transactions writing a batch (a sequence counts attempts; it is not
    rolled back). Returns set_failures(n)."""
    enabled.execute(
        "CREATE SEQUENCE public.attempts; CREATE TABLE public.failures (n integer); INSERT INTO public.failures VALUES (0);"
        " CREATE FUNCTION public.fail_some() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF nextval('public.attempts') <= (SELECT n FROM public.failures) THEN"
        " RAISE EXCEPTION USING ERRCODE = '40P01', MESSAGE = 'deadlock detected (injected)'; END IF; RETURN NULL; END $$;"
        " CREATE TRIGGER fail_some AFTER INSERT ON passthrough.batches FOR EACH ROW EXECUTE FUNCTION public.fail_some()")

    def set_failures(n: int) -> None:
        enabled.execute("UPDATE public.failures SET n = %s", (n,))
        enabled.execute("SELECT setval('public.attempts', 1, false)")

    yield set_failures
    enabled.execute("DROP TRIGGER fail_some ON passthrough.batches; DROP FUNCTION public.fail_some();"
                    " DROP TABLE public.failures; DROP SEQUENCE public.attempts")


def attempts(conn) -> int:
    return conn.execute("SELECT last_value FROM public.attempts").fetchone()[0]


@pytest.mark.single_node("its fixture puts a test trigger on passthrough.batches, a reference table on Citus,"
                         " and Citus refuses triggers on reference tables (docs/scale-out.md: why distribute"
                         " drops replace_seed)")
def test_retries_are_bounded_and_then_503(client, enabled, failing_attempts, private_key):
    failing_attempts(MAX_TRANSACTION_ATTEMPTS - 1)  # fails all but the last attempt
    response = client.post("/v3/events", headers=json_headers(private_key), json=[event()])
    assert response.status_code == 202 and attempts(enabled) == MAX_TRANSACTION_ATTEMPTS
    assert stored_counts(enabled) == (1, 1, 1)

    failing_attempts(MAX_TRANSACTION_ATTEMPTS)  # fails every attempt
    response = client.post("/v3/events", headers=json_headers(private_key), json=[event(data_ts=1_700_000_001)])
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["detail"] == {
        "code": "database_unavailable", "sqlstate": "40P01",
        "message": "the database is unavailable or busy; nothing was stored, retry later"}
    assert attempts(enabled) == MAX_TRANSACTION_ATTEMPTS  # bounded: no fifth attempt
    assert stored_counts(enabled) == (1, 1, 1)


def test_a_revoked_key_is_refused_at_once_by_a_live_server(db_url, live):
    """No cache anywhere: the request right after the revocation, on the same kept-alive connection, is 401,
    on every kind of route."""
    base, public, private = live
    with httpx.Client(base_url=base, timeout=30) as http, psycopg.connect(db_url, autocommit=True) as owner:
        calls = {
            "events": lambda key: http.post("/v3/events", headers=json_headers(key), json=[event()]),
            "graphql": lambda key: http.post("/v3/graphql", headers=json_headers(key),
                                             json={"query": "{audiences {edges {cursor}}}"}),
            "segments": lambda key: http.get("/v3/segments", headers={"x-api-key": key}),
        }
        assert [calls[c](private).status_code for c in calls] == [202, 200, 200]
        owner.execute("SELECT passthrough.revoke_api_key('priv')")
        for name, call in calls.items():
            response = call(private)
            assert response.status_code == 401, (name, response.text)
        assert calls["events"](public).status_code == 202  # other keys are unaffected
