"""Snapshot imports on the distributed schema (import_snapshot, snapshot_diff), and the reads after them, against
literals and tests/reference_model.py: the same answers as on one server.

Every test writes its own audiences (a fresh prefix), so the tests share the session's one cluster and database.
"""

from __future__ import annotations

import random
import uuid
from decimal import Decimal

import psycopg
from reference_model import Event, Snapshot, SnapshotModel, to_us
from test_citus_past import FS, _apply, _define, _expected, _past_reads

from pyapp.ingest.snapshot import import_rows, snapshot_diff
from pyapp.ingest.staging import StagedRow, format_row

BASE_TS = Decimal(1_760_000_000)


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
