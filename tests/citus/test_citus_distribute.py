"""passthrough.distribute() on a real Citus cluster: each table where docs/scale-out.md says, and idempotent."""

from __future__ import annotations

import psycopg

DISTRIBUTED = {"memberships", "events", "membership_expiries", "snapshot_members"}
REFERENCE = {"settings", "identifier_types", "external_audiences", "audiences", "api_keys", "webhooks", "batches",
             "snapshots"}
COORDINATOR = {"membership_changes", "audience_size_deltas", "load_rejects"}


def _citus_tables(conn) -> dict[str, tuple[str, str, int]]:
    """Every passthrough table in Citus's metadata: name -> (citus_table_type, distribution column, colocation)."""
    found = conn.execute(
        "SELECT table_name::text, citus_table_type, distribution_column, colocation_id FROM citus_tables"
        " WHERE table_name::text LIKE 'passthrough.%'").fetchall()
    return {name.removeprefix("passthrough."): (kind, column, coloc) for name, kind, column, coloc in found}


def test_distribute_places_every_table_and_a_second_call_changes_nothing(citus_url):
    with psycopg.connect(citus_url, autocommit=True) as conn:
        tables = _citus_tables(conn)
        assert {name for name, (kind, _, _) in tables.items() if kind == "distributed"} == DISTRIBUTED
        assert {name for name, (kind, _, _) in tables.items() if kind == "reference"} == REFERENCE
        assert not COORDINATOR & set(tables)
        assert {tables[name][1] for name in DISTRIBUTED} == {"identifier"}
        assert len({tables[name][2] for name in DISTRIBUTED}) == 1  # co-located

        again = conn.execute("SELECT table_name, placement, action FROM passthrough.distribute()").fetchall()
        assert {action for _, _, action in again} == {"unchanged"}
        assert {name for name, placement, _ in again if placement == "coordinator"} == COORDINATOR
        assert _citus_tables(conn) == tables
