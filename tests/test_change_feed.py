"""The change feed (sql/functions/210_change_feed.sql): every transition, in an order consumers resume from without
missing a change or seeing one twice, whatever order transactions commit in; GET /v3/changes; the CLI."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from http_helpers import json_headers
from reference_model import Event, MembershipModel, dumps
from sqlhelpers import expect_error, reset_data, rows, scalar

from pyapp.db import connect

pytest_plugins = ["http_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
TS = 1_700_000_000
FEED = "SELECT cursor, change, identifier_type, identifier, audience_id, audience FROM passthrough.changes(%s, %s)"


def apply(conn, identifier, audience, action, ts, identifier_type="fs_user_id"):
    return conn.execute(
        "SELECT * FROM passthrough.apply_event(%s, %s, %s, %s, %s)", (identifier_type, identifier, audience, action, ts)
    ).fetchone()


def read_all(conn, after=None, limit=1000):
    """Every readable change after the cursor, page by page; returns (changes, last cursor)."""
    out = []
    while True:
        page = rows(conn, FEED, (after, limit))
        out += page
        if page:
            after = page[-1][0]
        if len(page) < limit:
            return out, after


@pytest.fixture
def feed_conn(conn):
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    return conn


def test_every_transition_and_only_transitions(feed_conn):
    c = feed_conn
    apply(c, "u1", "aud-a", "qualify", TS)          # entered
    apply(c, "u1", "aud-a", "qualify", TS + 1)      # still in: nothing
    apply(c, "u1", "aud-a", "disqualify", TS - 5)   # older than the deciding event: nothing
    apply(c, "u2", "aud-a", "disqualify", TS)       # never was in: nothing
    apply(c, "u1", "aud-a", "disqualify", TS + 2)   # exited
    apply(c, "u3", "aud-b", "qualify", TS)          # entered an audience with no definition
    changes, _ = read_all(c)
    assert [row[1:] for row in changes] == [
        ("entered", "fs_user_id", "u1", "aud-a", "seg_a"),
        ("exited", "fs_user_id", "u1", "aud-a", "seg_a"),
        ("entered", "fs_user_id", "u3", "aud-b", None),
    ]
    detail = rows(c, "SELECT event_ts, source, batch_id, received_at IS NOT NULL FROM passthrough.changes()")
    assert [(int(ts.timestamp()), source, ok) for ts, source, _, ok in detail] == [
        (TS, "sql", True), (TS + 2, "sql", True), (TS, "sql", True)]
    batches = [b for _, _, b, _ in detail]
    assert batches == sorted(batches) and len(set(batches)) == 3


def test_one_batch_records_each_pair_once_with_the_cursor_in_order(feed_conn):
    events = [{"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": f"u{n}"},
               "data": {"audience_id": "aud-a", "ts": TS}} for n in range(5)]
    events += [{**events[0], "action": "disqualify", "data": {"audience_id": "aud-a", "ts": TS + 1}}]  # u0: in then out
    result = feed_conn.execute("SELECT * FROM passthrough.apply_events(%s::jsonb)", (json.dumps(events),)).fetchone()
    changes, _ = read_all(feed_conn)
    assert result[3] == len(changes) == 4  # u0 ends where it began: the newest event per pair decides
    assert sorted(r[3] for r in changes) == ["u1", "u2", "u3", "u4"]
    cursors = [tuple(int(p) for p in r[0].split("-")) for r in changes]
    assert cursors == sorted(cursors) and len(set(cursors)) == 4


def test_resuming_page_by_page_gives_every_change_once(feed_conn):
    for n in range(7):
        apply(feed_conn, f"u{n}", "aud-a", "qualify", TS + n)
        apply(feed_conn, f"u{n}", "aud-a", "disqualify", TS + n + 1)
    everything, last = read_all(feed_conn)
    assert len(everything) == 14
    paged, last_paged = read_all(feed_conn, limit=3)
    assert paged == everything and last_paged == last
    assert rows(feed_conn, FEED, (last, 10)) == []
    assert rows(feed_conn, FEED, (everything[4][0], 100)) == everything[5:]


def test_transactions_that_commit_out_of_order(db_url, feed_conn):
    """T1 writes, T2 writes and commits, a reader reads, T1 commits, the reader resumes: T1's change comes
    exactly once, and before T2's (a sequence number would have let the reader pass T1 for good)."""
    reader = feed_conn
    with connect(db_url) as t1, connect(db_url) as t2:
        apply(t1, "u1", "aud-a", "qualify", TS)        # T1 writes first (the older transaction) ...
        apply(t2, "u2", "aud-a", "qualify", TS)        # ... T2 writes ...
        t2.commit()                                    # ... and commits first
        seen, cursor = read_all(reader)
        assert seen == [] and cursor is None           # T2's change waits: T1 may still add one before it
        assert scalar(reader, "SELECT passthrough.changes_pending()") is True
        t1.commit()
    resumed, cursor = read_all(reader, cursor)
    assert [r[3] for r in resumed] == ["u1", "u2"]
    assert read_all(reader, cursor)[0] == []
    assert scalar(reader, "SELECT passthrough.changes_pending()") is False


def test_a_reader_that_went_past_a_committed_change_still_gets_an_older_transactions_change(db_url, feed_conn):
    reader = feed_conn
    apply(reader, "u0", "aud-a", "qualify", TS)        # committed before anything below
    with connect(db_url) as t1, connect(db_url) as t2:
        apply(t1, "u1", "aud-a", "qualify", TS)
        apply(t2, "u2", "aud-a", "qualify", TS)
        t2.commit()
        first, cursor = read_all(reader)
        assert [r[3] for r in first] == ["u0"]
        apply(reader, "u3", "aud-a", "qualify", TS)    # newer than T1, committed while T1 is open
        assert read_all(reader, cursor)[0] == []
        t1.rollback()                                  # an aborted transaction's change never shows
    rest, cursor = read_all(reader, cursor)
    assert [r[3] for r in rest] == ["u2", "u3"]


def test_concurrent_writers_committing_in_random_order_are_read_exactly_once(db_url, feed_conn):
    """Writers hold their transactions open for random times while a reader follows the feed."""
    reader = feed_conn
    rng = random.Random(8)
    plans = [[(f"w{w}-u{rng.randrange(6)}", rng.choice(["qualify", "disqualify"]), rng.uniform(0, 0.03))
              for _ in range(25)] for w in range(4)]
    failures: list[BaseException] = []

    def writer(plan):
        try:
            with connect(db_url) as c:
                for n, (identifier, action, pause) in enumerate(plan):
                    apply(c, identifier, "aud-a", action, TS + n)
                    time.sleep(pause)  # the transaction stays open while others commit
                    c.commit()
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(plan,)) for plan in plans]
    for t in threads:
        t.start()
    seen, cursor = [], None
    while any(t.is_alive() for t in threads):
        page, cursor = read_all(reader, cursor, limit=5)
        seen += page
    for t in threads:
        t.join()
    assert not failures, failures
    page, cursor = read_all(reader, cursor)
    seen += page
    everything = rows(reader, "SELECT format('%%s-%%s-%%s-%%s', pos, level, batch_id, ord) FROM passthrough.membership_changes")
    assert sorted(r[0] for r in seen) == sorted(r for (r,) in everything)
    assert len({r[0] for r in seen}) == len(seen)  # never twice
    # per pair, the feed alternates entered/exited and ends in the current state
    state = dict(((i, q) for i, q in rows(reader, "SELECT identifier, qualified FROM passthrough.memberships")))
    last: dict[str, str] = {}
    for row in seen:
        assert last.get(row[3], "exited") != row[1], row
        last[row[3]] = row[1]
    assert {i: c == "entered" for i, c in last.items()} == {i: q for i, q in state.items() if q or i in last}


events_strategy = st.builds(
    Event,
    identifier_type=st.sampled_from(["fs_user_id", "email"]),
    identifier=st.sampled_from(["u1", "u2", "u3"]),
    audience_id=st.sampled_from(["aud-a", "aud-b"]),
    qualified=st.booleans(),
    ts=st.integers(0, 5).map(lambda s: Decimal(TS) + s),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(events_strategy, min_size=1, max_size=8), min_size=1, max_size=6))
def test_the_feed_replayed_is_the_state(conn, batches):
    """Per pair, the feed alternates entered/exited from not-a-member and ends in the model's state."""
    reset_data(conn)
    conn.execute("SELECT passthrough.enable()")
    model = MembershipModel()
    for batch in batches:
        conn.execute("SELECT passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in batch]),))
        model.apply(batch)
    replayed: dict[tuple[str, str, str], bool] = {}
    for _, change, identifier_type, identifier, audience_id, _ in read_all(conn, limit=4)[0]:
        key = (identifier_type, identifier, audience_id)
        assert replayed.get(key, False) != (change == "entered")
        replayed[key] = change == "entered"
    assert {k for k, q in replayed.items() if q} == model.qualified_pairs()


def test_notifies_once_per_batch_that_changed_something(db_url, feed_conn):
    with connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN passthrough_changes")
        apply(feed_conn, "u1", "aud-a", "qualify", TS)
        feed_conn.execute("SELECT passthrough.apply_events(%s::jsonb)", (json.dumps([
            {"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": f"v{n}"},
             "data": {"audience_id": "aud-a", "ts": TS}} for n in range(50)]),))
        apply(feed_conn, "u1", "aud-a", "qualify", TS + 1)  # no change: no notification
        got = list(listener.notifies(timeout=0.5))
    assert [n.channel for n in got] == ["passthrough_changes"] * 2


def test_current_change_cursor_skips_what_is_readable(feed_conn):
    apply(feed_conn, "u1", "aud-a", "qualify", TS)
    now = scalar(feed_conn, "SELECT passthrough.current_change_cursor()")
    assert read_all(feed_conn, now)[0] == []
    apply(feed_conn, "u2", "aud-a", "qualify", TS)
    assert [r[3] for r in read_all(feed_conn, now)[0]] == ["u2"]


@pytest.mark.parametrize("cursor", ["x", "1-2-3", "1-2-3-4-5", "-1-2-3-4", "1-2-3-4 ", "99999999999999999999-0-1-1",
                                    "1-2147483648-1-1", "1-0-1-2147483648", "1.0-0-1-1"])
def test_a_malformed_cursor_is_pt030(feed_conn, cursor):
    error = expect_error(feed_conn, FEED, (cursor, 10), sqlstate="PT030")
    assert "cursor" in error.message and error.detail == "field: after"


@pytest.mark.parametrize("limit", [0, -1, 10001])
def test_a_limit_out_of_range_is_pt010(feed_conn, limit):
    expect_error(feed_conn, FEED, (None, limit), sqlstate="PT010")


def test_no_limit_is_a_page_of_1000(enabled, client, private_key):
    enabled.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    enabled.execute("SELECT passthrough.apply_events(jsonb_agg(jsonb_build_object('type', 'passthrough', 'action', "
                    "'qualify', 'identifiers', jsonb_build_object('fs_user_id', 'u' || n), 'data', "
                    "jsonb_build_object('audience_id', 'aud-a', 'ts', 1700000000)))) FROM generate_series(1, 1001) n")
    assert len(enabled.execute("SELECT * FROM passthrough.changes(NULL, NULL)").fetchall()) == 1000
    assert len(enabled.execute("SELECT * FROM passthrough.changes()").fetchall()) == 1000
    response = client.get("/v3/changes", headers={"x-api-key": private_key})
    assert len(response.json()["changes"]) == 1000


# --------------------------------------------------------------------------- HTTP


def test_get_changes_pages_with_next(client, enabled, private_key):
    enabled.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
    for n in range(3):
        apply(enabled, f"u{n}", "aud-a", "qualify", TS + n)
    headers = {"x-api-key": private_key}
    first = client.get("/v3/changes?limit=2", headers=headers)
    assert first.status_code == 200, first.text
    body = first.json()
    assert [c["identifier"] for c in body["changes"]] == ["u0", "u1"]
    assert body["next"] == body["changes"][-1]["cursor"]
    change = body["changes"][0]
    assert change["change"] == "entered" and change["audience"] == "seg_a" and change["audience_id"] == "aud-a"
    assert change["event_ts"] == "2023-11-14T22:13:20Z" and change["source"] == "sql"
    assert change["received_at"].endswith("Z") and isinstance(change["batch_id"], int)
    rest = client.get("/v3/changes", params={"after": body["next"]}, headers=headers).json()
    assert [c["identifier"] for c in rest["changes"]] == ["u2"]
    empty = client.get("/v3/changes", params={"after": rest["next"]}, headers=headers).json()
    assert empty == {"changes": [], "next": rest["next"]}
    assert client.get("/v3/changes", headers=headers).json()["changes"] == body["changes"] + rest["changes"]


def test_changes_made_over_http_show_in_the_feed(client, enabled, private_key):
    sent = client.post("/v3/events", headers=json_headers(private_key), json=[
        {"type": "passthrough", "action": "qualify", "identifiers": {"email": "v1"},
         "data": {"audience_id": "aud-x", "ts": TS}}])
    assert sent.status_code == 202
    [change] = client.get("/v3/changes", headers={"x-api-key": private_key}).json()["changes"]
    assert (change["identifier_type"], change["identifier"], change["source"]) == ("email", "v1", "http")


@pytest.mark.parametrize("query, code", [
    ("after=nope", "invalid_cursor"), ("limit=0", "invalid_argument"), ("limit=ten", "invalid_argument"),
    ("limit=10001", "invalid_argument"), ("limit=99999999999", "invalid_input")])
def test_get_changes_refuses_bad_arguments(client, db, private_key, query, code):
    response = client.get(f"/v3/changes?{query}", headers={"x-api-key": private_key})
    assert response.status_code == 400 and response.json()["detail"]["code"] == code


def test_get_changes_shows_expiries_and_says_when_a_cursor_was_pruned(client, enabled, private_key):
    enabled.execute("SELECT passthrough.create_audience('seg_a', 'aud-a', p_ttl => interval '1 hour')")
    apply(enabled, "u1", "aud-a", "qualify", Decimal(round(time.time() - 7200)))
    enabled.execute("SELECT passthrough.expire_memberships()")
    headers = {"x-api-key": private_key}
    changes = client.get("/v3/changes", headers=headers).json()["changes"]
    assert [(c["change"], c["source"]) for c in changes] == [("entered", "sql"), ("expired", "expiry")]
    # the entry's batch was received "two hours ago"; a 1 hour retention prunes it
    enabled.execute("UPDATE passthrough.batches SET received_at = now() - interval '2 hours' WHERE id = %s",
                    (changes[0]["batch_id"],))
    enabled.execute("SELECT passthrough.set_event_retention(interval '1 hour')")
    enabled.execute("SELECT * FROM passthrough.prune_history()")
    enabled.execute("SELECT passthrough.set_event_retention(NULL)")
    gone = client.get("/v3/changes", params={"after": "1-0-0-0"}, headers=headers)
    assert gone.status_code == 410 and gone.json()["detail"]["code"] == "cursor_pruned"
    assert client.get("/v3/changes", headers=headers).json()["changes"] == changes[1:]


def test_get_changes_needs_a_private_key(client, db, public_key):
    assert client.get("/v3/changes", headers={"x-api-key": public_key}).status_code == 403


# --------------------------------------------------------------------------- CLI


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyapp.cli", *args]


def test_cli_prints_the_feed_and_resumes(db_url, feed_conn):
    apply(feed_conn, "u1", "aud-a", "qualify", TS)
    apply(feed_conn, "u2", "aud-a", "qualify", TS)
    out = subprocess.run(cli("changes", "--database-url", db_url), capture_output=True, text=True, timeout=60,
                         cwd=ROOT, check=True).stdout.splitlines()
    lines = [json.loads(line) for line in out]
    assert [(x["change"], x["identifier"], x["audience"]) for x in lines] == [
        ("entered", "u1", "seg_a"), ("entered", "u2", "seg_a")]
    assert lines[0]["event_ts"] == "2023-11-14T22:13:20Z"  # TS, in the Z form HTTP and webhooks print
    assert lines[0]["received_at"].endswith("Z")
    again = subprocess.run(cli("changes", "--database-url", db_url, "--after", lines[0]["cursor"]),
                           capture_output=True, text=True, timeout=60, cwd=ROOT, check=True).stdout.splitlines()
    assert [json.loads(line)["identifier"] for line in again] == ["u2"]


class Lines:
    """The lines a process prints, read by a thread, so a test can wait for one with a timeout."""

    def __init__(self, proc):
        import queue

        self.queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.queue.put(line) for line in proc.stdout], daemon=True).start()

    def next(self, timeout=20.0):
        return self.queue.get(timeout=timeout)


def follower_idle_since(conn):
    """When the follower's backend last finished a statement, if it is idle after checking changes_pending."""
    return scalar(conn, "SELECT max(state_change) FROM pg_stat_activity WHERE state = 'idle'"
                        " AND query = 'SELECT passthrough.changes_pending()' AND pid <> pg_backend_pid()")


def test_cli_follow_prints_changes_as_they_are_committed(db_url, feed_conn):
    apply(feed_conn, "u0", "aud-a", "qualify", TS)
    proc = subprocess.Popen(cli("changes", "--follow", "--from-now", "--database-url", db_url), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines_out = Lines(proc)
    try:
        # wait until it has read and sleeps on LISTEN (its last statement: changes_pending, then idle)
        deadline = time.monotonic() + 30
        while not follower_idle_since(feed_conn):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.05)
        time.sleep(0.3)
        with connect(db_url) as t1:  # an older open transaction holds back a newer one's change
            apply(t1, "u1", "aud-a", "qualify", TS)
            apply(feed_conn, "u2", "aud-a", "qualify", TS)
            time.sleep(0.3)
            t1.commit()
        lines = [json.loads(lines_out.next()) for _ in range(2)]
        assert [x["identifier"] for x in lines] == ["u1", "u2"]  # not u0: it was there before --from-now
        apply(feed_conn, "u1", "aud-a", "disqualify", TS + 1)
        assert json.loads(lines_out.next())["change"] == "exited"
        deadline = time.monotonic() + 30
        while not (idle_since := follower_idle_since(feed_conn)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)  # idle: it sleeps on LISTEN instead of polling, so its backend runs nothing
        assert follower_idle_since(feed_conn) == idle_since
    finally:
        proc.terminate()
        proc.wait(timeout=30)
