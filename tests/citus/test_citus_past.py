"""Reads of the past on the distributed schema (customer_audiences_at, audience_size_at), against
tests/reference_model.py: the same answers as on one server, at instants before, between and after the inputs.

Every test writes its own audiences (a fresh prefix), so the tests share the session's one cluster and database.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
from reference_model import Event, SnapshotModel, dumps, to_us

BASE_TS = Decimal(1_760_000_000)
FS = "fs_user_id"


def instant(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)


def _define(conn, audiences: list[str]) -> None:
    conn.execute("SELECT passthrough.enable()")
    for audience in audiences:
        conn.execute("SELECT passthrough.create_audience(%s, %s)", (audience, audience))


def _apply(conn, events: list[Event]) -> None:
    conn.execute("SELECT passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in events]),))


def _past_reads(conn, audiences: list[str], customers: list[str], at_us: int):
    """({customer: {audience: size}} by customer_audiences_at, {audience: size} by audience_size_at) at at_us."""
    at = instant(at_us)
    by_customer = {c: dict(conn.execute(
        "SELECT name, size FROM passthrough.customer_audiences_at(%s, %s, %s, %s)",
        (FS, c, audiences, at)).fetchall()) for c in customers}
    sizes = {a: conn.execute("SELECT passthrough.audience_size_at(%s, %s)", (a, at)).fetchone()[0]
             for a in audiences}
    return by_customer, sizes


def _expected(model: SnapshotModel, audiences: list[str], customers: list[str], at_us: int):
    sizes = {a: model.size(a, at_us) for a in audiences}
    return {c: {a: sizes[a] for a in model.audiences_of(FS, c, at_us)} for c in customers}, sizes


def test_reads_of_the_past_give_the_models_answers(citus_url):
    prefix = f"t{uuid.uuid4().hex[:8]}"
    audiences = [f"{prefix}_a{i}" for i in range(3)]
    customers = [f"{prefix}_c{i}" for i in range(40)]  # many identifiers: both workers' shards
    rng = random.Random(7)
    model = SnapshotModel()
    with psycopg.connect(citus_url, autocommit=True) as conn:
        _define(conn, audiences)
        for _ in range(4):
            batch = [Event(FS, rng.choice(customers), rng.choice(audiences), rng.random() < 0.6,
                           BASE_TS + rng.randrange(40)) for _ in range(60)]
            _apply(conn, batch)
            model.add(batch)
        instants = [to_us(BASE_TS - 1), to_us(BASE_TS + 9), to_us(BASE_TS + 20), to_us(BASE_TS + 33),
                    to_us(BASE_TS + 39), to_us(BASE_TS + 100)]
        for at_us in instants:
            assert _past_reads(conn, audiences, customers, at_us) == _expected(model, audiences, customers, at_us), at_us
        assert sum(model.size(a, to_us(BASE_TS + 20)) for a in audiences) > 0  # the reads are not all empty
