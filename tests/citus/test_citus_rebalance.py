"""Adding a worker to a loaded, distributed database and rebalancing (docs/scale-out.md, "Adding a worker").

A third worker joins the session's cluster (``citus_add_node``); ``citus_rebalance_start()`` and
``citus_rebalance_wait()`` move shards onto it while the database holds memberships; then every answer (state,
sizes, per-customer reads, the export, the feed) is the one before, and a write after the move lands in the
model's state. The session's other tests then run on three workers: none depends on the count.
"""

from __future__ import annotations

import random
import uuid
from decimal import Decimal

import psycopg
from citus_cluster import _port, add_worker
from reference_model import Event, MembershipModel, dumps

BASE_TS = Decimal(1_760_000_000)


def _events(rng: random.Random, audiences: list[str], count: int, offset: int = 0) -> list[Event]:
    return [Event("fs_user_id", f"r{rng.randrange(400)}", rng.choice(audiences), rng.random() < 0.6,
                  BASE_TS + offset + rng.randrange(50)) for _ in range(count)]


def _feed(conn, audiences: list[str]) -> list[tuple[str, str, str, str]]:
    """(cursor, change, identifier, audience_id) of every change of these audiences, from the start."""
    found, cursor = [], None
    while page := conn.execute("SELECT cursor, change, identifier, audience_id FROM passthrough.changes(%s, 10000)",
                               (cursor,)).fetchall():
        found += [row for row in page if row[3] in audiences]
        cursor = page[-1][0]
    return found


def _answers(conn, segments: dict[str, str]) -> dict:
    """Everything a client can read about these audiences (segment name -> audience id), as comparable values."""
    audiences = list(segments.values())
    state = sorted(conn.execute(
        "SELECT m.identifier, e.external_id, m.qualified, m.event_ts FROM passthrough.memberships m"
        " JOIN passthrough.external_audiences e ON e.id = m.audience_key WHERE e.external_id = ANY(%s)",
        (audiences,)).fetchall())
    sizes = sorted(row for row in conn.execute(
        "SELECT external_audience_id, size FROM passthrough.list_audiences(1000)").fetchall() if row[0] in audiences)
    reads = {identifier: sorted(a for (a,) in conn.execute(
        "SELECT external_audience_id FROM passthrough.customer_audiences('fs_user_id', %s)", (identifier,)
        ).fetchall() if a in audiences) for identifier in (f"r{i}" for i in range(0, 400, 7))}
    exported = {a: sorted(i for (i,) in conn.execute(
        "SELECT identifier FROM passthrough.audience_members(%s, p_limit => 1000000)", (segment,)).fetchall())
        for segment, a in segments.items()}
    return {"state": state, "sizes": sizes, "reads": reads, "exported": exported, "feed": _feed(conn, audiences)}


def _placements(conn, port: int, table: str = "memberships") -> int:
    return conn.execute("SELECT count(*) FROM citus_shards WHERE nodeport = %s AND table_name::text = %s",
                        (port, f"passthrough.{table}")).fetchone()[0]


def test_a_third_worker_and_a_rebalance_leave_every_answer_unchanged(citus_cluster, citus_url):
    prefix = f"r{uuid.uuid4().hex[:8]}"
    audiences = [f"{prefix}_a{i}" for i in range(3)]
    segments = {f"s_{audience}": audience for audience in audiences}
    rng = random.Random(11)
    before_events = _events(rng, audiences, 1500)
    with psycopg.connect(citus_url, autocommit=True) as conn:
        conn.execute("SELECT passthrough.enable()")
        for segment, audience in segments.items():
            conn.execute("SELECT passthrough.create_audience(%s, %s)", (segment, audience))
        for i in range(0, len(before_events), 500):
            conn.execute("SELECT * FROM passthrough.apply_events(%s::jsonb)",
                         (dumps([e.as_json() for e in before_events[i:i + 500]]),))
        model = MembershipModel()
        model.apply(before_events)
        before = _answers(conn, segments)
        assert {(("fs_user_id", i, a)) for i, a, q, _ in before["state"] if q} == model.qualified_pairs()

        worker = add_worker(citus_cluster)
        assert _placements(conn, _port(worker)) == 0
        assert _placements(conn, _port(worker), "audiences") == 0  # reference tables come with the rebalance
        # the default mode: logical replication, writes go on; events (no primary key) is moved by its replica
        # identity, the whole row, which distribute() sets
        assert conn.execute("SELECT relreplident FROM pg_class WHERE oid = 'passthrough.events'::regclass"
                            ).fetchone()[0] == "f"
        conn.execute("SELECT citus_rebalance_start()")
        conn.execute("SELECT citus_rebalance_wait()")
        assert _placements(conn, _port(worker)) > 0  # shards of memberships moved to the new worker
        assert _placements(conn, _port(worker), "audiences") == 1

        assert _answers(conn, segments) == before

        after_events = _events(rng, audiences, 500, offset=100)  # newer: each decides its pair
        conn.execute("SELECT * FROM passthrough.apply_events(%s::jsonb)",
                     (dumps([e.as_json() for e in after_events]),))
        model.apply(after_events)
        state = _answers(conn, segments)["state"]
        assert {("fs_user_id", i, a) for i, a, q, _ in state if q} == model.qualified_pairs()
