"""Webhooks (sql/functions/250_webhooks.sql, pyapp/webhooks.py): the change feed POSTed to a real local HTTP receiver,
signed, in feed order, at least once, with a backoff, a lease and a compare-and-set cursor."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.server
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import orjson
import pytest
from http_helpers import make_client
from interleave import Sessions
from sqlhelpers import expect_error, rows, scalar

from pyapp import cli
from pyapp.web import ApiConfig
from pyapp.feed import CHANGES_SQL
from pyapp.web.database import make_pool
from pyapp.workers.webhooks import Webhooks, sign, verify

TS = 1_700_000_000


# --------------------------------------------------------------------------- a real receiver


class Receiver:
    """An HTTP server on 127.0.0.1:<free port> in a thread. ``plan`` lists what to answer the next requests:
    a status, or "close" (drop the connection unanswered); then 200. Every request is recorded."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.plan: list[int | str] = []
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                    action = receiver.plan.pop(0) if receiver.plan else 200
                try:
                    time.sleep(receiver.delay)
                    with receiver._lock:
                        receiver.requests.append({"headers": dict(self.headers), "body": body, "answer": action})
                    if action == "close":
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    self.send_response(action)
                    self.send_header("Content-Length", "7")
                    self.end_headers()
                    self.wfile.write(b"nope :(" if action >= 300 else b"thanks!")
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def payloads(self) -> list[dict]:
        return [orjson.loads(r["body"]) for r in self.requests]

    def acknowledged_changes(self) -> list[dict]:
        return [c for r in self.requests if r["answer"] == 200 for c in orjson.loads(r["body"])["changes"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def feed(conn):
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.create_audience('vip', 'crm-vip')")
    conn.execute("SELECT passthrough.create_audience('news', 'crm-news')")
    return conn


def qualify(conn, who: str, audience: str = "crm-vip", action: str = "qualify", ts: int = TS) -> None:
    conn.execute("SELECT passthrough.apply_event('fs_user_id', %s, %s, %s, %s::numeric)", (who, audience, action, ts))


def webhook(conn, name: str = "hook") -> dict:
    cur = conn.execute("SELECT * FROM passthrough.list_webhooks() WHERE name = %s", (name,))
    return dict(zip([c.name for c in cur.description], cur.fetchone()))


def feed_extras(conn) -> list[tuple[str, datetime, int]]:
    """(cursor, received_at, batch_id) of each change in feed order, straight from passthrough.changes(): the
    fields of a change no literal can know."""
    return rows(conn, "SELECT cursor, received_at, batch_id FROM passthrough.changes(NULL, 100)")


def expected_change(extras: tuple[str, datetime, int], change: str, identifier: str, event_ts: str,
                    audience_id: str = "crm-vip", audience: str = "vip") -> dict:
    """A change object as a webhook delivers it (and GET /v3/changes serves it), written out."""
    cursor, received_at, batch_id = extras
    return {"cursor": cursor, "change": change, "identifier_type": "fs_user_id", "identifier": identifier,
            "audience_id": audience_id, "audience": audience, "event_ts": event_ts, "received_at": received_at,
            "source": "sql", "batch_id": batch_id}


def received_at_read(changes: list[dict]) -> list[dict]:
    """The delivered changes with received_at (UTC to the microsecond, with a Z) read back as a datetime."""
    for c in changes:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", c["received_at"]), c["received_at"]
    return [{**c, "received_at": datetime.fromisoformat(c["received_at"])} for c in changes]


POOL_CONFIG = ApiConfig(pool_min_size=0, pool_max_size=4, pool_timeout=5.0)


async def _rounds(db_url: str, workers: list[Webhooks], rounds: int) -> list:
    pool = make_pool(db_url, POOL_CONFIG)
    await pool.open()
    try:
        out = []
        for _ in range(rounds):
            out.append(await asyncio.gather(*(w.run_once(pool) for w in workers)))
        return out
    finally:
        await pool.close()


def deliver(db_url: str, rounds: int = 1, **options) -> list:
    """Run ``rounds`` delivery rounds of one worker; the outcomes of each."""
    worker = Webhooks(listen=False, **options)
    return [r[0] for r in asyncio.run(_rounds(db_url, [worker], rounds))]


def due_now(conn, name: str = "hook") -> None:
    conn.execute("UPDATE passthrough.webhooks SET next_attempt_at = now() WHERE name = %s", (name,))


# --------------------------------------------------------------------------- create, list, delete


def test_create_returns_a_secret_shown_once_and_list_never_shows_it(feed, receiver):
    secret = scalar(feed, "SELECT passthrough.create_webhook('hook', %s, p_allow_private_network => true)", (receiver.url,))
    assert secret.startswith("whsec_") and len(secret) == 6 + 64
    other = scalar(feed, "SELECT passthrough.create_webhook('other', %s, ARRAY['vip', 'news', 'vip'], false, p_allow_private_network => true)",
                   (receiver.url,))
    assert other != secret
    listed = rows(feed, "SELECT * FROM passthrough.list_webhooks()")
    assert [r[0] for r in listed] == ["hook", "other"]
    assert not any(secret in str(r) or other in str(r) for r in listed)
    hook, other_row = webhook(feed, "hook"), webhook(feed, "other")
    assert hook["audiences"] is None and hook["cursor"] is not None  # from now on
    assert other_row["audiences"] == ["news", "vip"] and other_row["cursor"] is None  # from the start
    assert (hook["paused"], hook["failures"], hook["last_error"]) == (False, 0, None)
    feed.execute("SELECT passthrough.delete_webhook('hook')")
    assert [r[0] for r in rows(feed, "SELECT name FROM passthrough.list_webhooks()")] == ["other"]


def test_create_and_delete_errors(feed, receiver):
    feed.execute("SELECT passthrough.create_webhook('hook', %s, p_allow_private_network => true)", (receiver.url,))
    error = expect_error(feed, "SELECT passthrough.create_webhook('hook', 'https://example.com/x')", sqlstate="PT033")
    assert error.detail == "field: name" and error.hint
    for url in ["ftp://example.com/x", "http://", "example.com/hook", "https://user:pw@example.com/",
                "https://example.com/a b", "http://example.com:99999/", "javascript:alert(1)", None, "x" * 3000]:
        error = expect_error(feed, "SELECT passthrough.create_webhook('h2', %s)", (url,), sqlstate="PT035")
        assert error.detail == "field: url", url
    for name in ["", "-x", "a b", None, "x" * 64]:
        error = expect_error(feed, "SELECT passthrough.create_webhook(%s, 'https://example.com/')", (name,),
                             sqlstate="PT035")
        assert error.detail == "field: name"
    for audiences in [[], ["vip", None], ["vip", "nope"]]:
        error = expect_error(feed, "SELECT passthrough.create_webhook('h2', 'https://example.com/', %s::text[])",
                             (audiences,), sqlstate="PT035")
        assert error.detail == "field: audiences"
    assert "'nope'" in error.message
    for url in ["https://example.com", "HTTP://93.184.215.14:8080/x?y=1#z", "http://[2606:4700::1]:9000/hook",
                "https://a-b.c.d/", "https://10.example.com/"]:
        feed.execute("SELECT passthrough.create_webhook(%s, %s)", (f"ok{len(url)}", url))
    for url in ["HTTP://10.0.0.1:8080/x?y=1#z", "http://[::1]:9000/hook"]:  # private, loopback: only when asked
        feed.execute("SELECT passthrough.create_webhook(%s, %s, p_allow_private_network => true)", (f"ok{len(url)}", url))
    error = expect_error(feed, "SELECT passthrough.create_webhook('h2', 'https://example.com/', p_allow_private_network"
                         " => NULL)", sqlstate="PT035")
    assert error.detail == "field: allow_private_network"
    for call in ["delete_webhook('nope')", "pause_webhook('nope')", "resume_webhook('nope')"]:
        error = expect_error(feed, f"SELECT passthrough.{call}", sqlstate="PT034")
        assert error.detail == "field: name" and "'nope'" in error.message


def test_the_error_mapping_of_the_new_codes():
    from pyapp import errors

    assert {s: (errors.DOMAIN_ERRORS[s].name, errors.http_status(s)) for s in ("PT033", "PT034", "PT035")} == {
        "PT033": ("webhook_exists", 409), "PT034": ("webhook_not_found", 404), "PT035": ("invalid_webhook", 400)}


# --------------------------------------------------------------------------- delivery


def test_a_delivery_is_signed_and_carries_the_feeds_change_objects(feed, receiver, db_url):
    secret = scalar(feed, "SELECT passthrough.create_webhook('hook', %s, NULL, false, p_allow_private_network => true)", (receiver.url,))
    qualify(feed, "u1")
    qualify(feed, "u2", "crm-news")
    before = time.time()
    [outcomes] = deliver(db_url)
    assert [(o.name, o.sent, o.status, o.moved) for o in outcomes] == [("hook", 2, 200, True)]
    [request] = receiver.requests
    headers = {k.lower(): v for k, v in request["headers"].items()}
    timestamp, signature, body = headers["x-passthrough-timestamp"], headers["x-passthrough-signature"], request["body"]
    assert before - 1 <= int(timestamp) <= time.time() + 1
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert signature == f"sha256={expected}" == sign(secret, timestamp, body)
    assert verify(secret, timestamp, body, signature)
    assert not verify(secret, timestamp, body + b" ", signature)
    assert not verify("whsec_other", timestamp, body, signature)
    assert not verify(secret, str(int(timestamp) - 301), body, sign(secret, str(int(timestamp) - 301), body))
    assert headers["content-type"] == "application/json" and len(headers["x-passthrough-delivery"]) >= 32
    payload = orjson.loads(body)
    first, second = feed_extras(feed)
    assert {**payload, "changes": received_at_read(payload["changes"])} == {
        "webhook": "hook",
        "changes": [expected_change(first, "entered", "u1", "2023-11-14T22:13:20Z"),
                    expected_change(second, "entered", "u2", "2023-11-14T22:13:20Z", "crm-news", "news")],
        "next": second[0],
    }
    hook = webhook(feed)
    assert (hook["cursor"], hook["last_status"], hook["failures"]) == (payload["next"], 200, 0)
    assert hook["last_delivered_at"] is not None
    # nothing new: not even claimed (a caught-up webhook's row is not written per poll), nothing sent
    version = scalar(feed, "SELECT xmin::text FROM passthrough.webhooks")
    assert deliver(db_url, rounds=3) == [[], [], []]
    assert scalar(feed, "SELECT xmin::text FROM passthrough.webhooks") == version
    assert len(receiver.requests) == 1 and webhook(feed)["cursor"] == payload["next"]
    qualify(feed, "u3")
    [outcomes] = deliver(db_url)
    assert [(o.name, o.sent) for o in outcomes] == [("hook", 1)]


def test_from_now_skips_the_past_and_pages_arrive_in_feed_order_each_change_once(feed, receiver, db_url):
    qualify(feed, "old")
    feed.execute("SELECT passthrough.create_webhook('hook', %s, p_allow_private_network => true)", (receiver.url,))
    for i in range(7):
        qualify(feed, f"u{i}", ts=TS + i)
    qualify(feed, "u0", action="disqualify", ts=TS + 100)
    outcomes = deliver(db_url, rounds=6, page_size=3)
    assert [o[0].sent for o in outcomes if o] == [3, 3, 2]  # then caught up: not claimed
    assert [o[0].more for o in outcomes[:3]] == [True, True, False]
    delivered = receiver.acknowledged_changes()
    assert [(c["identifier"], c["change"]) for c in delivered] == (
        [(f"u{i}", "entered") for i in range(7)] + [("u0", "exited")])
    _old, *extras = feed_extras(feed)
    assert received_at_read(delivered) == [  # the feed after "old", in order, each change once
        *(expected_change(extras[i], "entered", f"u{i}", f"2023-11-14T22:13:2{i}Z") for i in range(7)),
        expected_change(extras[7], "exited", "u0", "2023-11-14T22:15:00Z")]
    assert [p["next"] for p in receiver.payloads()] == [delivered[2]["cursor"], delivered[5]["cursor"],
                                                         delivered[7]["cursor"]]


def test_deliveries_replay_to_the_state_when_an_older_transaction_replaced_a_younger_ones_change(
        feed, receiver, db_url):
    """Webhooks read the feed through passthrough.changes, so they inherit its order (tests/test_change_feed_order.py):
    the older transaction's batch waits on u0 while a younger one qualifies u1 and commits; then the older
    batch disqualifies both. Delivered in order, each pair's last change is its state."""
    feed.execute("SELECT passthrough.create_webhook('hook', %s, NULL, false, p_allow_private_network => true)", (receiver.url,))

    def batch(*events):
        body = [{"type": "passthrough", "action": action, "identifiers": {"fs_user_id": who},
                 "data": {"audience_id": "crm-vip", "ts": ts}} for who, action, ts in events]
        return lambda c: c.execute("SELECT passthrough.apply_events(%s::jsonb)", (orjson.dumps(body).decode(),))

    with Sessions(db_url, 3) as (holder, old, young):
        holder.start(batch(("u0", "qualify", TS + 100)))
        waiting = old.start(batch(("u0", "disqualify", TS + 200), ("u1", "disqualify", TS + 200)))
        assert not waiting.done()  # it holds its transaction id and waits on u0
        young.start(batch(("u1", "qualify", TS + 100)))
        young.commit()
        holder.commit()
        old.wait()
        old.commit()
    while scalar(feed, "SELECT passthrough.changes_pending()"):  # e.g. an autovacuum ANALYZE's transaction
        time.sleep(0.01)
    deliver(db_url, rounds=6, page_size=1)  # a page per change: the cursor moves between them
    delivered = [(c["identifier"], c["change"]) for c in receiver.acknowledged_changes()]
    assert [change for who, change in delivered if who == "u1"] == ["entered", "exited"]
    assert [change for who, change in delivered if who == "u0"] == ["entered", "exited"]
    assert rows(feed, "SELECT count(*) FROM passthrough.memberships WHERE qualified") == [(0,)]


def test_a_failing_receiver_gets_the_same_page_again_with_a_growing_backoff(feed, receiver, db_url):
    feed.execute("SELECT passthrough.create_webhook('hook', %s, NULL, false, p_allow_private_network => true)", (receiver.url,))
    qualify(feed, "u1")
    receiver.plan = [500, "close", 503]
    waits = []
    for attempt in range(1, 4):
        [outcome] = deliver(db_url)[0]
        assert outcome.error and not outcome.moved
        hook = webhook(feed)
        assert hook["failures"] == attempt and hook["cursor"] is None
        waits.append((hook["next_attempt_at"] - hook["last_attempt_at"]).total_seconds())
        assert deliver(db_url) == [[]]  # not due yet: nobody claims it
        due_now(feed)
    assert webhook(feed)["last_status"] == 503 and webhook(feed)["last_error"] == "HTTP 503: nope :("
    # 1 s, 2 s, 4 s, each times a jitter of 0.5 to 1
    assert 0.5 <= waits[0] <= 1 and 1 <= waits[1] <= 2 and 2 <= waits[2] <= 4, waits
    [outcome] = deliver(db_url)[0]
    assert (outcome.status, outcome.moved) == (200, True)
    bodies = [r["body"] for r in receiver.requests]
    assert len(bodies) == 4 and len({orjson.loads(b)["next"] for b in bodies}) == 1
    assert [orjson.loads(b)["changes"] for b in bodies[1:]] == [orjson.loads(bodies[0])["changes"]] * 3
    assert len({r["headers"]["X-Passthrough-Delivery"] for r in receiver.requests}) == 4
    hook = webhook(feed)
    assert (hook["failures"], hook["last_error"], hook["last_status"]) == (0, None, 200)  # a success resets it


def test_the_backoff_is_capped_at_ten_minutes_and_overridable(feed, receiver, db_url):
    feed.execute("SELECT passthrough.create_webhook('hook', %s, NULL, false, p_allow_private_network => true)", (receiver.url,))
    hook_id = scalar(feed, "SELECT id FROM passthrough.webhooks")
    feed.execute("UPDATE passthrough.webhooks SET failures = 1000")
    at = scalar(feed, "SELECT passthrough._webhook_failed(%s, 'boom', 500) - now()", (hook_id,))
    assert timedelta(minutes=5) <= at <= timedelta(minutes=10)
    at = scalar(feed, "SELECT passthrough._webhook_failed(%s, 'boom', NULL, interval '10 ms', interval '1 s') - now()",
                (hook_id,))
    assert timedelta(milliseconds=500) <= at <= timedelta(seconds=1)
    qualify(feed, "u1")
    receiver.plan = [500, 500]
    feed.execute("UPDATE passthrough.webhooks SET failures = 0, next_attempt_at = now()")
    outcomes = []
    deadline = time.monotonic() + 10
    while not (outcomes and outcomes[-1] and outcomes[-1][0].moved) and time.monotonic() < deadline:
        outcomes.extend(deliver(db_url, backoff_base=0.01, backoff_cap=0.05))
        time.sleep(0.02)
    assert [r["answer"] for r in receiver.requests] == [500, 500, 200]


def test_the_audience_filter_and_pages_it_filters_out_entirely(feed, receiver, db_url):
    feed.execute("SELECT passthrough.create_webhook('hook', %s, ARRAY['news'], p_allow_private_network => true)", (receiver.url,))
    for i in range(4):
        qualify(feed, f"v{i}")  # vip only: a whole page with nothing selected
    outcomes = deliver(db_url, rounds=2, page_size=2)
    assert receiver.requests == [] and [o[0].moved for o in outcomes] == [True, True]
    last = rows(feed, CHANGES_SQL, (None, 100))[-1][0]
    assert webhook(feed)["cursor"] == last  # moved on without a POST
    qualify(feed, "n1", "crm-news")
    qualify(feed, "v9")
    qualify(feed, "n2", "crm-news")
    deliver(db_url, rounds=2, page_size=10)
    assert [(c["identifier"], c["audience"]) for c in receiver.acknowledged_changes()] == [("n1", "news"), ("n2", "news")]
    assert orjson.loads(receiver.requests[0]["body"])["next"] == rows(feed, CHANGES_SQL, (None, 100))[-1][0]


def test_two_workers_never_deliver_the_same_webhook_at_once(feed, receiver, db_url):
    for name in ("a", "b", "c"):
        feed.execute("SELECT passthrough.create_webhook(%s, %s, NULL, false, p_allow_private_network => true)", (name, receiver.url))
    qualify(feed, "u1")
    receiver.delay = 0.3
    workers = [Webhooks(listen=False) for _ in range(4)]
    results = asyncio.run(_rounds(db_url, workers, 1))[0]
    names = sorted(o.name for outcomes in results for o in outcomes)
    assert names == ["a", "b", "c"]  # each claimed by exactly one worker
    assert sorted(orjson.loads(r["body"])["webhook"] for r in receiver.requests) == ["a", "b", "c"]


def test_the_lease_keeps_a_claimed_webhook_from_other_claims_until_it_expires(feed, receiver, db_url):
    feed.execute("SELECT passthrough.create_webhook('hook', %s, p_allow_private_network => true)", (receiver.url,))
    qualify(feed, "u1")  # something to deliver: a caught-up webhook is never claimed
    from pyapp.db import connect

    with connect(db_url, autocommit=True) as other:
        assert len(rows(feed, "SELECT * FROM passthrough._claim_webhooks(interval '1 minute', 10)")) == 1
        assert rows(other, "SELECT * FROM passthrough._claim_webhooks(interval '1 minute', 10)") == []
        feed.execute("UPDATE passthrough.webhooks SET locked_until = now() - interval '1 s'")  # the holder died
        assert len(rows(other, "SELECT * FROM passthrough._claim_webhooks(interval '1 minute', 10)")) == 1
        # while one transaction claims, the other skips the row rather than waiting for it
        with other.transaction():
            other.execute("UPDATE passthrough.webhooks SET locked_until = NULL")
            other.execute("SELECT * FROM passthrough.webhooks FOR UPDATE")
            assert rows(feed, "SELECT * FROM passthrough._claim_webhooks(interval '1 minute', 10)") == []


def test_the_cursor_moves_by_compare_and_set_and_only_forward(feed, receiver):
    feed.execute("SELECT passthrough.create_webhook('hook', %s, NULL, false, p_allow_private_network => true)", (receiver.url,))
    for i in range(3):
        qualify(feed, f"u{i}", ts=TS + i)
    hook_id = scalar(feed, "SELECT id FROM passthrough.webhooks")
    c1, c2, c3 = (r[0] for r in rows(feed, CHANGES_SQL, (None, 100)))
    delivered = "SELECT passthrough._webhook_delivered(%s, %s, %s, 200)"
    assert scalar(feed, delivered, (hook_id, None, c2)) is True
    assert scalar(feed, delivered, (hook_id, None, c3)) is False  # a stale worker read from the start
    assert scalar(feed, delivered, (hook_id, c2, c1)) is False  # never backwards
    assert webhook(feed)["cursor"] == c2
    assert scalar(feed, delivered, (hook_id, c2, c3)) is True
    assert webhook(feed)["cursor"] == c3
    expect_error(feed, delivered, (hook_id, c3, "garbage"), sqlstate="PT030")


def test_a_pruned_cursor_shows_as_last_error_and_is_retried_slowly(feed, receiver, db_url):
    feed.execute("SELECT passthrough.create_webhook('hook', %s, p_allow_private_network => true)", (receiver.url,))
    cursor = webhook(feed)["cursor"]
    pos = int(cursor.split("-")[0])
    feed.execute("UPDATE passthrough.settings SET feed_pruned_through = %s", (f"{pos}-0-1-1",))
    [outcomes] = deliver(db_url)  # the loop goes on
    assert outcomes[0].error.startswith("PT032")
    hook = webhook(feed)
    assert hook["failures"] == 1 and "pruned" in hook["last_error"] and "hint:" in hook["last_error"]
    assert hook["next_attempt_at"] > hook["last_attempt_at"] and hook["cursor"] == cursor
    assert receiver.requests == []
    # the way out: skip to now
    feed.execute("SELECT passthrough.resume_webhook('hook', true)")
    hook = webhook(feed)
    assert (hook["failures"], hook["last_error"]) == (0, None) and hook["cursor"] != cursor
    qualify(feed, "u1")
    deliver(db_url)
    assert [c["identifier"] for c in receiver.acknowledged_changes()] == ["u1"]


def test_a_paused_webhook_is_not_delivered_and_resumes_from_its_cursor(feed, receiver, db_url):
    feed.execute("SELECT passthrough.create_webhook('hook', %s, p_allow_private_network => true)", (receiver.url,))
    feed.execute("SELECT passthrough.pause_webhook('hook')")
    qualify(feed, "u1")
    assert deliver(db_url) == [[]] and webhook(feed)["paused"] is True
    feed.execute("SELECT passthrough.resume_webhook('hook')")
    deliver(db_url)
    assert [c["identifier"] for c in receiver.acknowledged_changes()] == ["u1"]


def test_a_deleted_webhook_mid_delivery_is_harmless(feed, receiver):
    feed.execute("SELECT passthrough.create_webhook('hook', %s, NULL, false, p_allow_private_network => true)", (receiver.url,))
    hook_id = scalar(feed, "SELECT id FROM passthrough.webhooks")
    feed.execute("SELECT passthrough.delete_webhook('hook')")
    assert scalar(feed, "SELECT passthrough._webhook_delivered(%s, NULL, '1-0-1-1', 200)", (hook_id,)) is False
    assert scalar(feed, "SELECT passthrough._webhook_failed(%s, 'x', 500)", (hook_id,)) is None


def test_the_background_loop_delivers_a_webhook_one_page_at_a_time_in_feed_order(feed, receiver, db_url):
    """The loop claims again while deliveries are in flight: the lease (and the loop's own record of what it
    delivers) keeps a webhook to one POST at a time, so its pages arrive in feed order, each once."""
    feed.execute("SELECT passthrough.create_webhook('hook', %s, NULL, false, true)", (receiver.url,))
    for i in range(6):
        qualify(feed, f"u{i}", ts=TS + i)
    receiver.delay = 0.2  # many polls of the loop per POST

    async def scenario() -> None:
        pool = make_pool(db_url, POOL_CONFIG)
        await pool.open()
        hooks = Webhooks(every=0.02, page_size=2, listen=False)
        await hooks.start(pool)
        try:
            deadline = time.monotonic() + 15
            while len(receiver.acknowledged_changes()) < 6:
                assert time.monotonic() < deadline, "timed out"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # and nothing more arrives
        finally:
            await hooks.close()
            await pool.close()

    asyncio.run(scenario())
    assert receiver.max_in_flight == 1 and len(receiver.requests) == 3
    assert [c["identifier"] for c in receiver.acknowledged_changes()] == [f"u{i}" for i in range(6)]


class HangingReceiver:
    """Accepts connections on 127.0.0.1 and never reads nor answers: a receiver that hangs."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.listener.accept()[0])
            except OSError:  # closed
                return

    def close(self) -> None:
        self.listener.close()
        for connection in self.accepted:
            connection.close()


HANG_TIMEOUT = 25.0  # the hanging receiver's POST would end only after this long
INDEPENDENCE_BOUND = 5.0  # what the other webhook may wait for a change, at most


@pytest.mark.parametrize("hanging_webhooks", [1, 12])  # 12: more than an HTTP client's default connection pool
def test_a_hanging_receiver_does_not_delay_another_webhooks_deliveries(feed, receiver, db_url, hanging_webhooks):
    hanging = HangingReceiver()
    for n in range(hanging_webhooks):
        feed.execute("SELECT passthrough.create_webhook(%s, %s, p_allow_private_network => true)",
                     (f"hangs{n}", hanging.url))
    feed.execute("SELECT passthrough.create_webhook('normal', %s, p_allow_private_network => true)", (receiver.url,))

    async def until(condition, seconds: float) -> float:
        started = time.monotonic()
        while not condition():
            assert time.monotonic() - started < seconds, "timed out"
            await asyncio.sleep(0.02)
        return time.monotonic() - started

    async def scenario() -> list[float]:
        pool = make_pool(db_url, POOL_CONFIG)
        await pool.open()
        hooks = Webhooks(every=0.1, timeout=HANG_TIMEOUT)
        await hooks.start(pool)
        try:
            await asyncio.to_thread(qualify, feed, "u0")
            await until(lambda: len(receiver.acknowledged_changes()) == 1
                        and len(hanging.accepted) == hanging_webhooks, 10)
            waits = []
            for i in (1, 2, 3):  # while the hanging receiver holds its POST
                await asyncio.to_thread(qualify, feed, f"u{i}", ts=TS + i)
                waits.append(await until(lambda: len(receiver.acknowledged_changes()) == i + 1, INDEPENDENCE_BOUND))
            assert len(hanging.accepted) == hanging_webhooks  # each still hanging, none failed yet:
            assert {webhook(feed, f"hangs{n}")["failures"] for n in range(hanging_webhooks)} == {0}
            return waits
        finally:
            hanging.close()  # its POST fails now: close() need not wait for the timeout
            await hooks.close()
            await pool.close()

    waits = asyncio.run(scenario())
    assert [c["identifier"] for c in receiver.acknowledged_changes()] == ["u0", "u1", "u2", "u3"]
    print(f"\nFIGURES webhook independence: another webhook's changes arrived after {max(waits):.2f} s at most "
          f"while {hanging_webhooks} receivers hung (timeout {HANG_TIMEOUT:g} s)")


# --------------------------------------------------------------------------- the server and the command


def test_the_server_delivers_in_the_background(feed, receiver, db_url):
    secret = scalar(feed, "SELECT passthrough.create_webhook('hook', %s, p_allow_private_network => true)", (receiver.url,))
    config = ApiConfig(pool_min_size=1, pool_max_size=4, pool_timeout=2.0, webhook_every=0.1)
    with make_client(db_url, config):
        qualify(feed, "u1")
        deadline = time.monotonic() + 10
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        qualify(feed, "u2")
        while len(receiver.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [c["identifier"] for c in receiver.acknowledged_changes()] == ["u1", "u2"]
    for r in receiver.requests:
        h = r["headers"]
        assert verify(secret, h["X-Passthrough-Timestamp"], r["body"], h["X-Passthrough-Signature"])


def test_cli_webhooks_create_list_pause_resume_delete(feed, receiver, db_url, capsys):
    assert cli.main(["webhooks", "create", "--name", "crm", "--url", receiver.url, "--audience", "vip",
                     "--audience", "news", "--from-start", "--database-url", db_url]) == 1  # 127.0.0.1: refused
    assert "is refused: 127.0.0.1 is a loopback address" in capsys.readouterr().err
    assert cli.main(["webhooks", "create", "--name", "crm", "--url", receiver.url, "--audience", "vip",
                     "--audience", "news", "--from-start", "--allow-private-network", "--database-url", db_url]) == 0
    out, err = capsys.readouterr()
    secret = out.strip()
    assert secret.startswith("whsec_") and "only this once" in err
    assert webhook(feed, "crm")["audiences"] == ["news", "vip"] and webhook(feed, "crm")["cursor"] is None
    assert webhook(feed, "crm")["allow_private_network"] is True
    assert cli.main(["webhooks", "create", "--name", "public", "--url", "https://example.com/hook",
                     "--database-url", db_url]) == 0
    assert webhook(feed, "public")["allow_private_network"] is False
    capsys.readouterr()
    assert cli.main(["webhooks", "list", "--database-url", db_url]) == 0
    out = capsys.readouterr().out
    assert secret not in out
    # piped: the whole table, one line per webhook, each with its own name and allowed/refused
    (crm,) = [line for line in out.splitlines() if line.startswith("crm ")]
    (public,) = [line for line in out.splitlines() if line.startswith("public ")]
    assert "news, vip" in crm and "allowed" in crm and "refused" not in crm
    assert "(all)" in public and "refused" in public and "allowed" not in public
    assert cli.main(["webhooks", "pause", "crm", "--database-url", db_url]) == 0
    assert webhook(feed, "crm")["paused"] is True
    assert cli.main(["webhooks", "resume", "crm", "--from-now", "--database-url", db_url]) == 0
    assert webhook(feed, "crm")["paused"] is False and webhook(feed, "crm")["cursor"] is not None
    assert cli.main(["webhooks", "delete", "crm", "--database-url", db_url]) == 0
    assert "deleted webhook 'crm'" in capsys.readouterr().out
    assert cli.main(["webhooks", "delete", "crm", "--database-url", db_url]) == 1
    assert "no webhook named 'crm'" in capsys.readouterr().err
    assert cli.main(["webhooks", "create", "--name", "x", "--url", "ftp://x", "--database-url", db_url]) == 1
    assert "invalid webhook url" in capsys.readouterr().err
    capsys.readouterr()

