"""Snapshot imports on the distributed schema (import_snapshot, snapshot_diff), and the reads after them (the
present, the past, one pair's history, sizes over time), against literals and tests/reference_model.py: the
same answers as on one server.

Every test writes its own audiences (a fresh prefix), so the tests share the session's one cluster and database.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
from reference_model import Event, Snapshot, SnapshotModel, to_us
from test_citus_past import FS, _apply, _define, _expected, _past_reads, instant

from pyapp.ingest.snapshot import import_rows, snapshot_diff
from pyapp.ingest.staging import StagedRow, format_row

BASE_TS = Decimal(1_760_000_000)
HOUR_TS = Decimal(1_759_996_800)  # the start of an hour (UTC), for sizes over hour buckets
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _staged(s: Snapshot) -> bytes:
    return "".join(
        format_row(n, StagedRow(type="passthrough", action="qualify", identifier_type=t, identifier=i,
                                audience_id=s.audience_id, ts=None if ts is None else str(ts)))
        for n, (t, i, ts) in enumerate(s.rows, 2)).encode()


def _import(conn, s: Snapshot, dry_run: bool = False):
    with conn.transaction(force_rollback=dry_run):
        result = import_rows(conn, _staged(s), s.audience_id, at=s.at, force=True, dry_run=dry_run)
        diff = snapshot_diff(conn, 1000)
    return result, diff


def test_a_snapshot_diff_and_import_give_the_literal_changes(citus_url):
    prefix = f"t{uuid.uuid4().hex[:8]}"
    audience = f"{prefix}_a"
    c1, c2, c3, c4 = (f"{prefix}_c{i}" for i in range(1, 5))
    with psycopg.connect(citus_url, autocommit=True) as conn:
        _define(conn, [audience])
        _apply(conn, [Event(FS, c1, audience, True, BASE_TS + 10), Event(FS, c2, audience, True, BASE_TS + 10),
                      Event(FS, c3, audience, True, BASE_TS + 30), Event(FS, c4, audience, False, BASE_TS + 5)])
        snapshot = Snapshot(audience, BASE_TS + 20, ((FS, c1, None), (FS, c4, BASE_TS + 15)))
        for dry_run in (True, False):
            result, diff = _import(conn, snapshot, dry_run)
            assert (result.listed, result.to_qualify, result.to_disqualify, result.unchanged, result.kept_newer,
                    result.members_before, result.applied) == (2, 1, 1, 1, 1, 2, not dry_run)
            # unchanged members are left out of the diff
            assert {(row[0], row[2]) for row in diff} == {("disqualify", c2), ("kept_newer", c3), ("qualify", c4)}
        members = {row[0] for row in conn.execute(
            "SELECT identifier FROM passthrough.audience_members(%s)", (audience,)).fetchall()}
        assert members == {c1, c3, c4}
        # one pair's history shows the snapshot at 20 (from the customer's first input on) and its listed rows
        history = {c: [(int(ts.timestamp()) - int(BASE_TS), action, after, changed)
                       for ts, action, after, changed in conn.execute(
                           "SELECT event_ts, action, qualified_after, changed"
                           " FROM passthrough.membership_history(%s, %s, %s)", (FS, c, audience)).fetchall()]
                   for c in (c1, c2, c3, c4)}
        assert history == {
            c1: [(10, "qualify", True, True), (20, "qualify", True, False), (20, "snapshot_qualify", True, False)],
            c2: [(10, "qualify", True, True), (20, "snapshot_disqualify", False, True)],
            c3: [(30, "qualify", True, True)],  # its first input is after the snapshot
            c4: [(5, "disqualify", False, False), (15, "qualify", True, True), (20, "snapshot_qualify", True, False)],
        }
        # BASE_TS is 3,200 s into its hour: one bucket holds every input
        hour = instant(to_us(BASE_TS - 3200))
        assert [row[2:] for row in conn.execute(
            "SELECT * FROM passthrough.audience_size_history(%s, %s, %s, 'hour')",
            (audience, instant(to_us(BASE_TS)), instant(to_us(BASE_TS + 100)))).fetchall()] == [(0, 4, 1, 3)]
        assert conn.execute("SELECT bucket_start FROM passthrough.audience_size_history(%s, %s, %s, 'hour')",
                            (audience, instant(to_us(BASE_TS)), instant(to_us(BASE_TS + 100)))).fetchone()[0] == hour


def test_imports_among_events_give_the_models_state_and_past(citus_url):
    prefix = f"t{uuid.uuid4().hex[:8]}"
    audiences = [f"{prefix}_a{i}" for i in range(2)]
    customers = [f"{prefix}_c{i}" for i in range(30)]
    rng = random.Random(11)
    model = SnapshotModel()

    def events() -> list[Event]:
        return [Event(FS, rng.choice(customers), rng.choice(audiences), rng.random() < 0.6,
                      BASE_TS + rng.randrange(60)) for _ in range(50)]

    def snapshot(audience: str, at: int) -> Snapshot:
        listed = rng.sample(customers, 12)
        return Snapshot(audience, BASE_TS + at,
                        tuple((FS, c, None if rng.random() < 0.5 else BASE_TS + at - rng.randrange(5))
                              for c in listed))

    kept_newer = 0
    with psycopg.connect(citus_url, autocommit=True) as conn:
        _define(conn, audiences)
        # a snapshot newer than the events, then events after it, one older than the newest (decided from the
        # log), one at the same T as an earlier one (the verdict at T is both lists), one of the other audience
        a0, a1 = audiences
        steps = [events(), snapshot(a0, 45), events(), snapshot(a0, 20), events(), snapshot(a0, 45),
                 snapshot(a1, 70)]
        for step in steps:
            if isinstance(step, Snapshot):
                result, _ = _import(conn, step)
                kept_newer += result.kept_newer
                model.add([step])
            else:
                _apply(conn, step)
                model.add(step)
            live = {(FS, i, a) for i, a in conn.execute(
                "SELECT m.identifier, e.external_id FROM passthrough.memberships m"
                " JOIN passthrough.external_audiences e ON e.id = m.audience_key"
                " WHERE m.qualified AND e.external_id = ANY(%s)", (audiences,)).fetchall()}
            assert live == model.qualified_pairs()
        for at in (-1, 10, 20, 33, 45, 50, 70, 100):
            at_us = to_us(BASE_TS + at)
            assert _past_reads(conn, audiences, customers, at_us) == _expected(model, audiences, customers, at_us), at
    assert kept_newer > 0  # some listed pairs stood out of a verdict


def _expected_history(model: SnapshotModel, pair: tuple[str, str, str]) -> list[tuple[int, str, bool, bool]]:
    """membership_history's rows by its definition (docs/semantics.md), from the model: each event of the pair,
    and each snapshot time of its audience (the verdict of every snapshot of that T: listed by all of them) from
    the pair's first input on, with the state after that ts and whether it changed there (no ttl)."""
    identifier_type, identifier, audience = pair
    rows = [(e.ts_us, "qualify" if e.qualified else "disqualify") for e in model.events if e.pair == pair]
    verdicts: dict[int, bool] = {}
    for s in model.snapshots:
        if s.audience_id == audience:
            verdicts[s.at_us] = verdicts.get(s.at_us, True) and s.listed(identifier_type, identifier)
    first = min([ts for ts, _ in rows] + [ts for ts, listed in verdicts.items() if listed], default=None)
    rows += [(ts, "snapshot_qualify" if listed else "snapshot_disqualify") for ts, listed in verdicts.items()
             if first is not None and ts >= first]
    return sorted((ts, action, model.qualified(pair, ts), model.qualified(pair, ts) != model.qualified(pair, ts - 1))
                  for ts, action in rows)


def test_history_and_sizes_over_time_with_snapshots_give_the_models_answers(citus_url):
    """membership_history and audience_size_history on audiences with snapshots: older than the newest, two of
    the same T, listed rows with their own ts, over several hour buckets."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    audiences = [f"{prefix}_a{i}" for i in range(2)]
    customers = [f"{prefix}_c{i}" for i in range(16)]
    rng = random.Random(17)
    model = SnapshotModel()

    def minute(m: int) -> Decimal:
        return HOUR_TS + m * 60

    def events() -> list[Event]:
        return [Event(FS, rng.choice(customers), rng.choice(audiences), rng.random() < 0.6,
                      minute(rng.randrange(0, 300, 10))) for _ in range(40)]

    def snapshot(audience: str, at: int) -> Snapshot:
        return Snapshot(audience, minute(at), tuple(
            (FS, c, None if rng.random() < 0.5 else minute(at - rng.randrange(0, 40, 10)))
            for c in rng.sample(customers, 7)))

    a0, a1 = audiences
    with psycopg.connect(citus_url, autocommit=True) as conn:
        _define(conn, audiences)
        for step in [events(), snapshot(a0, 120), events(), snapshot(a0, 60), snapshot(a0, 120), snapshot(a1, 200),
                     events(), snapshot(a1, 250)]:
            if isinstance(step, Snapshot):
                _import(conn, step)
                model.add([step])
            else:
                _apply(conn, step)
                model.add(step)

        edges = [to_us(HOUR_TS + h * 3600) for h in range(6)]
        for audience in audiences:
            buckets = conn.execute("SELECT * FROM passthrough.audience_size_history(%s, %s, %s, 'hour')",
                                   (audience, instant(edges[0]), instant(edges[-1]))).fetchall()
            assert [(instant_us(b0), instant_us(b1), *counts) for b0, b1, *counts in buckets] == \
                model.size_history(audience, edges), audience
        assert any(entered and exited for a in audiences for _, _, _, entered, exited, _ in
                   model.size_history(a, edges))  # people come and go within a bucket

        shown = 0
        for customer in customers:
            for audience in audiences:
                got = conn.execute("SELECT event_ts, action, qualified_after, changed"
                                   " FROM passthrough.membership_history(%s, %s, %s)",
                                   (FS, customer, audience)).fetchall()
                expected = _expected_history(model, (FS, customer, audience))
                assert sorted((instant_us(ts), *rest) for ts, *rest in got) == expected, (customer, audience)
                shown += sum(1 for _, action, _, _ in expected if action.startswith("snapshot_"))
        assert shown > 0


def instant_us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)
