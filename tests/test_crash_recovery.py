"""PostgreSQL killed with SIGKILL (the postmaster, by its pid) in the middle of a stream of HTTP batches.

A dedicated throwaway server (tests/crashable_pg.py), a real ``passthrough serve`` process, and client
threads that keep posting batches, retrying on 503 or a connection error as the SDKs do. While every
client has a request in flight (held inside apply_events by a table lock) and a snapshot import is half
done, the postmaster is killed. Then:

* ``/readyz`` answers 503 while PostgreSQL is down, and 200 again once it is back, with no restart of
  the HTTP server (its pool reconnects by itself);
* every batch answered 202 is in the database; no batch is half applied (each stored batch holds every
  event of exactly one client batch); the clients' retries converge to the reference model's state,
  and audience sizes are exact;
* the interrupted snapshot import left the audience's old membership intact.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from decimal import Decimal

import httpx
import psycopg
from crashable_pg import CrashablePostgres
from live_server import readyz, serving
from pgcluster import create_database

from pyapp import migrate
from pyapp.db import connect
from pyapp.ingest.snapshot import import_rows
from reference_model import Event, MembershipModel
from test_roles import staged

# Each must be held inside its own transaction at the kill. A worker's write budget is 5 connections of its
# pool of 10 (pyapp/web/database.py), and the kernel may hand every client's connection to the same worker, where
# the background jobs may hold one more: 4 always fit, 6 did not when they all landed on one worker.
CLIENTS = 4
BATCHES_PER_CLIENT = 30
EVENTS_PER_BATCH = 40
USERS = 80
AUDIENCES = [f"aud-{i}" for i in range(4)]
SNAPSHOT_AUDIENCE = "aud-snap"
ACKED_BEFORE_THE_KILL = 20  # batches answered 202 before the lock and the kill
RETRY_DEADLINE = 120.0  # seconds a client keeps retrying one batch


class Client(threading.Thread):
    """Posts its batches in order; retries a batch on 503 or a connection error until it gets 202."""

    def __init__(self, index: int, base: str, key: str, batches: list[list[Event]], stats: dict) -> None:
        super().__init__(name=f"client-{index}", daemon=True)
        self.index, self.base, self.key, self.batches, self.stats = index, base, key, batches, stats
        self.acked: list[tuple[int, float]] = []  # (batch number, monotonic time of the 202)
        self.in_flight: int | None = None  # the batch number whose request is outstanding
        self.failure: str | None = None
        self.lock = threading.Lock()

    def body(self, number: int) -> list[dict]:
        out = []
        for n, e in enumerate(self.batches[number]):
            event = e.as_json()
            event["data"]["ts"] = int(e.ts)
            event["data"]["idempotence_id"] = f"c{self.index}-b{number}-e{n}"
            out.append(event)
        return out

    def run(self) -> None:
        rng = random.Random(self.index)
        try:
            with httpx.Client(base_url=self.base, timeout=30) as http:
                for number in range(len(self.batches)):
                    deadline = time.monotonic() + RETRY_DEADLINE
                    while True:
                        assert time.monotonic() < deadline, f"batch {number} never acknowledged"
                        with self.lock:
                            self.in_flight = number
                        try:
                            response = http.post("/v3/events", json=self.body(number),
                                                 headers={"x-api-key": self.key})
                        except httpx.TransportError:
                            self.count("connection_errors")
                            time.sleep(rng.uniform(0.05, 0.2))
                            continue
                        finally:
                            with self.lock:
                                self.in_flight = None
                        if response.status_code == 202:
                            assert response.json()["accepted"] == len(self.batches[number])
                            self.acked.append((number, time.monotonic()))
                            break
                        assert response.status_code == 503, (response.status_code, response.text)
                        assert response.json()["detail"]["code"] == "database_unavailable"
                        assert response.headers["retry-after"] == "1"
                        self.count("503")
                        time.sleep(rng.uniform(0.05, 0.2))
        except BaseException as exc:  # reported by the test
            self.failure = f"{type(exc).__name__}: {exc}"

    def count(self, what: str) -> None:
        with self.lock:
            self.stats[what] = self.stats.get(what, 0) + 1


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_kill_9_of_the_postmaster_mid_stream(tmp_path):
    pg = CrashablePostgres()
    try:
        pg.start()
        db_url = create_database(pg.url, "passthrough")
        with connect(db_url) as c:
            migrate.migrate(c)
            c.commit()
        rng = random.Random(20260601)
        with psycopg.connect(db_url, autocommit=True) as owner:
            owner.execute("SELECT passthrough.enable()")
            for i, audience in enumerate([*AUDIENCES, SNAPSHOT_AUDIENCE]):
                owner.execute("SELECT passthrough.put_audience(%s, %s)", (f"seg_{i}", audience))
            key = owner.execute("SELECT passthrough.create_api_key('crash', 'private')").fetchone()[0]
            # the membership a snapshot import will try to replace when the server dies
            owner.execute("SELECT passthrough.apply_event('fs_user_id', %s, %s, 'qualify', %s)",
                          ("snap-old", SNAPSHOT_AUDIENCE, 1_700_000_000))
            snapshot_before = owner.execute(
                "SELECT identifier, qualified, event_ts FROM passthrough.memberships ORDER BY 1").fetchall()

        with serving(db_url, tmp_path) as base:
            streams = [
                [[Event("fs_user_id", f"u{rng.randrange(USERS)}", rng.choice(AUDIENCES), rng.random() < 0.6,
                        Decimal(1_700_000_000 + rng.randrange(2000))) for _ in range(EVENTS_PER_BATCH)]
                 for _ in range(BATCHES_PER_CLIENT)]
                for _ in range(CLIENTS)
            ]
            stats: dict[str, int] = {}
            clients = [Client(i, base, key, streams[i], stats) for i in range(CLIENTS)]
            for client in clients:
                client.start()
            wait_for(lambda: sum(len(c.acked) for c in clients) >= ACKED_BEFORE_THE_KILL, 60, "the first 202s")

            # Hold every writer inside apply_events: the batch row and new audience ids are written, uncommitted,
            # when its main statement waits for this lock.
            blocker = psycopg.connect(db_url)
            blocker.execute("LOCK TABLE passthrough.memberships IN SHARE MODE")
            importer_error: list[BaseException] = []

            def interrupted_import() -> None:
                try:
                    with psycopg.connect(db_url, application_name="snapshot-import") as c:
                        import_rows(c, staged([(f"snap-new-{i}", SNAPSHOT_AUDIENCE, "qualify") for i in range(50)]),
                                    SNAPSHOT_AUDIENCE, force=True)
                        c.commit()
                except BaseException as exc:
                    importer_error.append(exc)

            importer = threading.Thread(target=interrupted_import, daemon=True)
            importer.start()
            with psycopg.connect(db_url, autocommit=True) as watcher:
                def waiting() -> tuple[int, int] | None:
                    found = dict(watcher.execute(
                        # every worker's pool: passthrough-http-<pid> (pyapp/serving.py)
                        "SELECT regexp_replace(application_name, '^passthrough-http-[0-9]+$', 'passthrough-http'),"
                        " count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' GROUP BY 1").fetchall())
                    if found.get("passthrough-http", 0) >= CLIENTS and found.get("snapshot-import", 0) == 1:
                        return found["passthrough-http"], found["snapshot-import"]
                    return None

                http_waiting, _ = wait_for(waiting, 30, "every client and the import to wait inside their transaction")
            acked_before = sum(len(c.acked) for c in clients)
            in_flight = [(c, c.in_flight) for c in clients if c.in_flight is not None]
            events_in_flight = sum(len(c.batches[n]) for c, n in in_flight) + 50  # + the snapshot's rows
            killed_at = time.monotonic()
            pg.kill9()

            # PostgreSQL is down: /readyz says so, with no restart of the HTTP server
            assert readyz(base) == 503
            detail = httpx.get(f"{base}/readyz", timeout=10).json()["detail"]
            assert detail["code"] == "database_unavailable"
            time.sleep(1.0)  # the clients keep trying meanwhile and get 503s
            importer.join(30)
            assert importer_error and isinstance(importer_error[0], psycopg.OperationalError), importer_error
            try:
                blocker.close()
            except psycopg.Error:
                pass

            pg.start()  # crash recovery
            restarted_at = time.monotonic()
            wait_for(lambda: readyz(base) == 200, 60, "/readyz to be 200 again after the restart")
            ready_after = time.monotonic() - restarted_at
            for client in clients:
                client.join(RETRY_DEADLINE)
            failures = [c.failure for c in clients if c.failure or c.is_alive()]
            assert not failures, failures

            with psycopg.connect(db_url, autocommit=True) as owner:
                check_every_batch_whole_and_present(owner, clients)
                model = MembershipModel()
                model.apply(e for stream in streams for batch in stream for e in batch)
                state = {(i, a): (q, ts) for i, a, q, ts in owner.execute(
                    "SELECT m.identifier, x.external_id, m.qualified, extract(epoch FROM m.event_ts)"
                    " FROM passthrough.memberships m JOIN passthrough.external_audiences x ON x.id = m.audience_key"
                    " WHERE x.external_id <> %s", (SNAPSHOT_AUDIENCE,)).fetchall()}
                assert state == {(i, a): (q, Decimal(us) / 1_000_000) for (_, i, a), (us, q) in model.state.items()}
                sizes = dict(owner.execute("SELECT external_audience_id, size FROM passthrough.list_audiences()").fetchall())
                assert sizes == {**{a: model.sizes().get(a, 0) for a in AUDIENCES}, SNAPSHOT_AUDIENCE: 1}
                # the interrupted snapshot import: the old membership, nothing of the new list
                assert owner.execute(
                    "SELECT m.identifier, m.qualified, m.event_ts FROM passthrough.memberships m"
                    " JOIN passthrough.external_audiences x ON x.id = m.audience_key WHERE x.external_id = %s ORDER BY 1",
                    (SNAPSHOT_AUDIENCE,)).fetchall() == snapshot_before
            acked_before_kill = sum(1 for c in clients for _, t in c.acked if t < killed_at)
            assert acked_before_kill >= ACKED_BEFORE_THE_KILL and acked_before >= ACKED_BEFORE_THE_KILL
            assert len(in_flight) >= CLIENTS - 1 and http_waiting >= CLIENTS
            assert stats.get("503", 0) >= CLIENTS  # every in-flight request was answered 503 (or lost its connection)
            print(f"\nFIGURES crash: postmaster {pg.starts - 1} kill -9; batches acked before the kill {acked_before_kill};"
                  f" requests in flight at the kill {len(in_flight)} ({events_in_flight} events incl. a 50-row snapshot);"
                  f" 503s {stats.get('503', 0)}; connection errors {stats.get('connection_errors', 0)};"
                  f" ready again {ready_after:.1f}s after the restart;"
                  f" batches {CLIENTS * BATCHES_PER_CLIENT} x {EVENTS_PER_BATCH} events all converged")
    finally:
        pg.stop()


def check_every_batch_whole_and_present(conn, clients: list[Client]) -> None:
    """Each stored batch holds every event of exactly one client batch; every client batch is stored."""
    stored = conn.execute(
        "SELECT b.id, b.event_count, array_agg(e.idempotence_id ORDER BY e.idempotence_id)"
        " FROM passthrough.batches b JOIN passthrough.events e ON e.batch_id = b.id"
        " WHERE b.source = 'http' GROUP BY b.id").fetchall()
    found: Counter[tuple[int, int]] = Counter()
    for batch_id, event_count, ids in stored:
        prefixes = {i.rsplit("-e", 1)[0] for i in ids}
        assert len(prefixes) == 1, f"batch {batch_id} mixes client batches: {sorted(prefixes)[:3]}"
        (prefix,) = prefixes
        client, number = (int(x) for x in prefix[1:].split("-b"))
        expected = sorted(f"{prefix}-e{n}" for n in range(len(clients[client].batches[number])))
        assert ids == expected and event_count == len(expected), f"batch {batch_id} ({prefix}) is not whole"
        found[(client, number)] += 1
    empty = conn.execute(
        "SELECT count(*) FROM passthrough.batches b WHERE NOT EXISTS"
        " (SELECT 1 FROM passthrough.events e WHERE e.batch_id = b.id)").fetchone()[0]
    assert empty == 0, "a batch row without its events"
    for client in clients:
        for number, _ in client.acked:
            assert found[(client.index, number)] >= 1, f"acknowledged batch c{client.index}-b{number} is missing"
    assert len(found) == sum(len(c.batches) for c in clients)
