"""Membership state under concurrent writers: the state and exact sizes equal the reference model."""

import random
import threading
from decimal import Decimal

import psycopg

from reference_model import Event, MembershipModel, dumps
from sqlhelpers import rows

WRITERS = 6
BATCHES_PER_WRITER = 25


def test_sizes_stay_exact_under_concurrent_writers(db_url, conn):
    conn.execute("SELECT passthrough.enable()")
    for i in range(4):
        conn.execute("SELECT passthrough.put_audience(%s, %s)", (f"seg_{i}", f"aud-{i}"))
    rng = random.Random(20261128)
    # Overlapping users and audiences across writers, so they contend for the same rows.
    streams = [
        [
            [
                Event("fs_user_id", f"u{rng.randrange(40)}", f"aud-{rng.randrange(4)}", rng.random() < 0.6,
                      Decimal(1_700_000_000 + rng.randrange(50)))
                for _ in range(rng.randrange(1, 30))
            ]
            for _ in range(BATCHES_PER_WRITER)
        ]
        for _ in range(WRITERS)
    ]
    errors = []
    start = threading.Barrier(WRITERS)

    def write(batches):
        try:
            with psycopg.connect(db_url, autocommit=True) as writer:
                start.wait()
                for batch in batches:
                    writer.execute("SELECT passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in batch]),))
        except Exception as exc:  # reported below; a deadlock would land here
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s,)) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []

    model = MembershipModel()
    model.apply(e for stream in streams for batch in stream for e in batch)
    sizes = dict(rows(conn, "SELECT name, size FROM passthrough.list_audiences()"))
    assert sizes == {f"seg_{i}": model.sizes().get(f"aud-{i}", 0) for i in range(4)}
    counted = dict(
        rows(
            conn,
            "SELECT x.external_id, count(*) FROM passthrough.memberships m"
            " JOIN passthrough.external_audiences x ON x.id = m.audience_key WHERE m.qualified GROUP BY 1",
        )
    )
    assert counted == model.sizes()
    # size rows are folded as writers go: a handful per audience at most, not one per batch
    assert rows(conn, "SELECT max(n) <= %s FROM (SELECT count(*) n FROM passthrough.audience_size_deltas"
                      " GROUP BY audience_key) c", (WRITERS,)) == [(True,)]
