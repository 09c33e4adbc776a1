"""passthrough.distribute() and `passthrough distribute` on a server without Citus (the normal suite's).

What distribute does on a Citus cluster is tested there (tests/citus/, `make test-citus`); here: it refuses
with PT040 and changes nothing, and its plan places every table of the schema exactly once.
"""

from __future__ import annotations

from pyapp import cli
from sqlhelpers import expect_error, rows

# Where each table goes (docs/scale-out.md, Citus), written out rather than read from _distribution_plan().
PLACEMENTS = {
    "memberships": "distributed", "events": "distributed", "membership_expiries": "distributed",
    "snapshot_members": "distributed",
    "settings": "reference", "identifier_types": "reference", "external_audiences": "reference",
    "audiences": "reference", "api_keys": "reference", "webhooks": "reference", "batches": "reference",
    "snapshots": "reference",
    "membership_changes": "coordinator", "audience_size_deltas": "coordinator", "load_rejects": "coordinator",
}


def test_distribute_without_citus_is_refused_with_pt040(conn):
    error = expect_error(conn, "SELECT * FROM passthrough.distribute()", sqlstate="PT040")
    assert error.message == "Citus is not installed in this database"
    assert "CREATE EXTENSION citus" in error.hint
    assert rows(conn, "SELECT extname FROM pg_extension WHERE extname = 'citus'") == []


def test_the_plan_places_every_table_of_the_schema_once(conn):
    planned = rows(conn, "SELECT table_name, placement FROM passthrough._distribution_plan()")
    assert dict(planned) == PLACEMENTS
    assert len(planned) == len(PLACEMENTS)
    tables = {name for (name,) in rows(
        conn, "SELECT relname FROM pg_class WHERE relnamespace = 'passthrough'::regnamespace AND relkind = 'r'")}
    assert tables == set(PLACEMENTS)


def test_the_plan_places_a_foreign_keys_target_before_the_table_that_refers_to_it(conn):
    order = [name for (name,) in rows(conn, "SELECT table_name FROM passthrough._distribution_plan()")]
    foreign_keys = rows(
        conn, "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint"
              " WHERE contype = 'f' AND connamespace = 'passthrough'::regnamespace")
    assert foreign_keys  # audiences -> external_audiences at least
    for referring, target in foreign_keys:
        referring, target = referring.removeprefix("passthrough."), target.removeprefix("passthrough.")
        assert order.index(target) < order.index(referring), (referring, target)


def test_the_command_says_citus_is_missing_and_exits_1(db_url, capsys):
    assert cli.main(["distribute", "--database-url", db_url]) == 1
    err = capsys.readouterr().err
    assert "Citus is not installed in this database" in err
    assert "CREATE EXTENSION citus" in err  # the hint
