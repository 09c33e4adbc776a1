"""The writer, the reads and the change feed on the distributed schema, against tests/reference_model.py.

Every test writes its own audiences (a fresh prefix), so the tests share the session's one cluster and database.
Identifiers are many, so each batch is a distributed transaction over both workers' shards.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from decimal import Decimal

import psycopg
from reference_model import Event, MembershipModel, SnapshotModel, dumps, expected_feed

BASE_TS = Decimal(1_760_000_000)


def _events(rng: random.Random, audiences: list[str], identifiers: int, count: int) -> list[Event]:
    return [Event("fs_user_id", f"c{rng.randrange(identifiers)}", rng.choice(audiences), rng.random() < 0.6,
                  BASE_TS + rng.randrange(50)) for _ in range(count)]


def _define(conn, prefix: str, audiences: list[str]) -> None:
    conn.execute("SELECT passthrough.enable()")
    for audience in audiences:
        conn.execute("SELECT passthrough.create_audience(%s, %s)", (f"{prefix}_{audience}", audience))


def _stored_state(conn, audiences: list[str]) -> set[tuple[str, str, str]]:
    return {("fs_user_id", identifier, audience) for identifier, audience in conn.execute(
        "SELECT m.identifier, e.external_id FROM passthrough.memberships m"
        " JOIN passthrough.external_audiences e ON e.id = m.audience_key"
        " WHERE m.qualified AND e.external_id = ANY(%s)", (audiences,)).fetchall()}


def _feed(conn, audiences: list[str], after: str | None = None) -> list[tuple[str, str, str, str]]:
    """(cursor, change, identifier, audience_id) of every readable change after `after`, of these audiences."""
    found, cursor = [], after
    while True:
        page = conn.execute("SELECT cursor, change, identifier, audience_id FROM passthrough.changes(%s, 1000)",
                            (cursor,)).fetchall()
        if not page:
            return found
        found += [row for row in page if row[3] in audiences]
        cursor = page[-1][0]


def _prefix() -> tuple[str, list[str]]:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    return prefix, [f"{prefix}_a{i}" for i in range(3)]


def test_batches_give_the_models_state_sizes_reads_and_feed(citus_url):
    prefix, audiences = _prefix()
    rng = random.Random(21)
    steps = [_events(rng, audiences, 60, 80) for _ in range(6)]
    with psycopg.connect(citus_url, autocommit=True) as conn:
        _define(conn, prefix, audiences)
        start = conn.execute("SELECT passthrough.current_change_cursor()").fetchone()[0]
        for step in steps:
            conn.execute("SELECT * FROM passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in step]),))

        model = MembershipModel()
        model.apply(e for step in steps for e in step)
        assert _stored_state(conn, audiences) == model.qualified_pairs()

        sizes = {external: size for external, size in conn.execute(
            "SELECT external_audience_id, size FROM passthrough.list_audiences(1000)").fetchall()
            if external in audiences}
        assert sizes == {a: model.sizes().get(a, 0) for a in audiences}

        for identifier in ("c0", "c7", "c33"):
            read = conn.execute("SELECT external_audience_id FROM passthrough.customer_audiences('fs_user_id', %s)",
                                (identifier,)).fetchall()
            assert {a for (a,) in read if a in audiences} == {
                a for (_, i, a) in model.qualified_pairs() if i == identifier}

        feed: dict[tuple, list[str]] = {}
        for _, change, identifier, audience in _feed(conn, audiences, start):
            feed.setdefault(("fs_user_id", identifier, audience), []).append(change)
        expected = {pair: [change for change, _ in changes] for pair, changes in expected_feed(steps).items()}
        assert feed == expected


def test_a_bulk_load_gives_the_models_state(citus_url):
    prefix, audiences = _prefix()
    events = _events(random.Random(7), audiences, 200, 1500)
    with psycopg.connect(citus_url) as conn:
        _define(conn, prefix, audiences)
        conn.execute("SELECT passthrough.begin_load()")
        with conn.cursor().copy("COPY pg_temp.passthrough_load (type, action, identifier_type, identifier,"
                                " audience_id, ts) FROM STDIN") as copy:
            for e in events:
                copy.write_row(("passthrough", "qualify" if e.qualified else "disqualify", e.identifier_type,
                                e.identifier, e.audience_id, e.ts))
        accepted = conn.execute("SELECT accepted FROM passthrough.load_staged()").fetchone()[0]
        conn.commit()
        assert accepted == len(events)
        model = SnapshotModel(events)
        assert _stored_state(conn, audiences) == model.qualified_pairs()


def test_concurrent_batches_on_shared_identifiers_end_in_the_models_state_and_a_replayable_feed(citus_url):
    """Two writers send batches over the same identifiers, in opposite orders, at the same time. Citus's
    distributed deadlock detection may cancel one (40P01): it is retried, as POST /v3/events retries."""
    prefix, audiences = _prefix()
    rng = random.Random(5)
    batches = [_events(rng, audiences, 40, 60) for _ in range(12)]
    deadlocks = []
    with psycopg.connect(citus_url, autocommit=True) as conn:
        _define(conn, prefix, audiences)
        start = conn.execute("SELECT passthrough.current_change_cursor()").fetchone()[0]

    def writer(mine: list[list[Event]], reverse: bool) -> None:
        with psycopg.connect(citus_url, autocommit=True) as conn:
            for batch in mine:
                body = dumps([e.as_json() for e in sorted(batch, key=lambda e: e.identifier, reverse=reverse)])
                for _ in range(10):
                    try:
                        conn.execute("SELECT * FROM passthrough.apply_events(%s::jsonb)", (body,))
                        break
                    except psycopg.errors.DeadlockDetected:
                        deadlocks.append(1)
                else:
                    raise AssertionError("10 deadlocks in a row")

    threads = [threading.Thread(target=writer, args=(batches[0::2], False)),
               threading.Thread(target=writer, args=(batches[1::2], True))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    print(f"deadlocks retried: {len(deadlocks)}")

    model = MembershipModel()
    model.apply(e for batch in batches for e in batch)
    with psycopg.connect(citus_url, autocommit=True) as conn:
        assert _stored_state(conn, audiences) == model.qualified_pairs()
        feed = _feed(conn, audiences, start)
    assert len({cursor for cursor, *_ in feed}) == len(feed)  # no change twice
    replayed: dict[tuple, bool] = {}
    for _, change, identifier, audience in feed:
        pair = ("fs_user_id", identifier, audience)
        assert change == ("exited" if replayed.get(pair, False) else "entered"), (pair, change)
        replayed[pair] = change == "entered"
    assert {pair for pair, inside in replayed.items() if inside} == model.qualified_pairs()


def test_the_export_lists_the_models_members(citus_url):
    """audience_members, audience_member_counts and audience_member_lines (GET /v3/segments/{id}/members, export)."""
    prefix, audiences = _prefix()
    events = _events(random.Random(11), audiences, 300, 900)
    with psycopg.connect(citus_url, autocommit=True) as conn:
        _define(conn, prefix, audiences)
        conn.execute("SELECT * FROM passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in events]),))
        model = MembershipModel()
        model.apply(events)
        audience = audiences[0]
        members = sorted(i for (_, i, a) in model.qualified_pairs() if a == audience)
        assert members  # the draw gives every audience members

        listed = conn.execute("SELECT identifier FROM passthrough.audience_members(%s, p_limit => 1000)",
                              (f"{prefix}_{audience}",)).fetchall()
        assert [i for (i,) in listed] == members  # in key order: identifiers compare bytewise (COLLATE "C")
        assert conn.execute("SELECT identifier_type, members FROM passthrough.audience_member_counts(%s)",
                            (f"{prefix}_{audience}",)).fetchall() == [("fs_user_id", len(members))]
        blocks = conn.execute(
            "SELECT members, lines FROM passthrough.audience_member_lines(%s, 'csv', p_limit => 1000)",
            (f"{prefix}_{audience}",)).fetchall()
        assert sum(n for n, _ in blocks) == len(members)
        assert [line.split(",")[1] for _, lines in blocks for line in lines.splitlines()] == members


def test_the_sweeper_records_the_expired_members_in_state_sizes_and_feed(citus_url):
    """An audience with a ttl of one hour: qualifies older than that expire; the sweeper records them."""
    prefix, audiences = _prefix()
    audience = audiences[0]
    now = Decimal(int(time.time()))
    old, recent = now - 7200, now - 60
    events = ([Event("fs_user_id", f"x{i}", audience, True, old) for i in range(30)]  # expired
              + [Event("fs_user_id", f"x{i}", audience, True, recent) for i in range(20, 30)]  # renewed
              + [Event("fs_user_id", f"x{i}", audience, False, old + 1) for i in range(15, 20)])  # left in time
    with psycopg.connect(citus_url, autocommit=True) as conn:
        conn.execute("SELECT passthrough.enable()")
        conn.execute("SELECT passthrough.create_audience(%s, %s, p_ttl => interval '1 hour')",
                     (f"{prefix}_{audience}", audience))
        conn.execute("SELECT * FROM passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in events]),))
        start = conn.execute("SELECT passthrough.current_change_cursor()").fetchone()[0]

        recorded = 0
        while (n := conn.execute("SELECT passthrough.expire_memberships(7)").fetchone()[0]) > 0:
            recorded += n
        assert recorded == 15  # x0..x14: qualified two hours ago, never renewed nor left
        assert conn.execute("SELECT passthrough.expire_memberships()").fetchone()[0] == 0

        assert _stored_state(conn, [audience]) == {("fs_user_id", f"x{i}", audience) for i in range(20, 30)}
        assert conn.execute("SELECT size FROM passthrough.get_audience(%s)",
                            (f"{prefix}_{audience}",)).fetchone()[0] == 10
        feed = _feed(conn, [audience], start)
        assert sorted((change, identifier) for _, change, identifier, _ in feed) == sorted(
            ("expired", f"x{i}") for i in range(15))


def test_pruning_keeps_the_deciding_event_of_each_pair(citus_url):
    """prune_history with a retention of one day: of a pair's events older than that, only the deciding one stays."""
    prefix, audiences = _prefix()
    audience = audiences[0]
    day = 86400
    now = Decimal(int(time.time()))
    events = [Event("fs_user_id", f"p{i}", audience, qualified, now - age)
              for i in range(5) for qualified, age in ((True, 3 * day), (False, 2 * day), (True, 36 * 3600))]
    with psycopg.connect(citus_url, autocommit=True) as conn:
        _define(conn, prefix, [audience])
        conn.execute("SELECT * FROM passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in events]),))
        try:
            conn.execute("SELECT passthrough.set_event_retention(interval '1 day')")
            while sum(conn.execute("SELECT events, changes, snapshot_members FROM passthrough.prune_history()")
                      .fetchone()) > 0:
                pass
        finally:
            conn.execute("SELECT passthrough.set_event_retention(NULL)")
        kept = conn.execute(
            "SELECT e.identifier, e.qualified, e.event_ts FROM passthrough.events e"
            " JOIN passthrough.external_audiences x ON x.id = e.audience_key WHERE x.external_id = %s"
            " ORDER BY e.identifier", (audience,)).fetchall()
        assert [(i, q, int(ts.timestamp())) for i, q, ts in kept] == [
            (f"p{i}", True, int(now) - 36 * 3600) for i in range(5)]
        assert _stored_state(conn, [audience]) == {("fs_user_id", f"p{i}", audience) for i in range(5)}


def test_an_older_transaction_replacing_a_younger_ones_version_comes_after_it_in_the_feed(citus_url):
    """The interleaving, forced: B (older) writes y and stays open; A (younger) writes x and commits; the feed
    holds A's change back until B ends; B then replaces A's version of x. The feed, once B commits: y entered
    (B's position), x entered (A's), x exited (A's position, one level up): each pair in the order it changed."""
    prefix, audiences = _prefix()
    audience = audiences[0]

    def batch(identifier: str, qualified: bool, ts: int) -> str:
        return dumps([Event("fs_user_id", identifier, audience, qualified, BASE_TS + ts).as_json()])

    with psycopg.connect(citus_url, autocommit=True) as reader, psycopg.connect(citus_url) as b, \
            psycopg.connect(citus_url, autocommit=True) as a:
        _define(reader, prefix, [audience])
        start = reader.execute("SELECT passthrough.current_change_cursor()").fetchone()[0]
        b.execute("SELECT * FROM passthrough.apply_events(%s::jsonb)", (batch("y", True, 1),))  # B's id is older
        a.execute("SELECT * FROM passthrough.apply_events(%s::jsonb)", (batch("x", True, 1),))  # A commits
        assert _feed(reader, [audience], start) == []  # B, older and open, holds A's change back
        b.execute("SELECT * FROM passthrough.apply_events(%s::jsonb)", (batch("x", False, 2),))
        b.commit()
        feed = _feed(reader, [audience], start)
    assert [(change, identifier) for _, change, identifier, _ in feed] == [
        ("entered", "y"), ("entered", "x"), ("exited", "x")]
    (pos_y, level_y), (pos_x1, level_x1), (pos_x2, level_x2) = (
        (int(c.split("-")[0]), int(c.split("-")[1])) for c, *_ in feed)
    assert pos_y < pos_x1 == pos_x2 and (level_y, level_x1, level_x2) == (0, 0, 1)
