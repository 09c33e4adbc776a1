"""CREATE EXTENSION passthrough (the packaged extension, docs/dba.md) on a Citus coordinator, then
passthrough.distribute(): every table placed as with a migrator install, and the functions answering.

A database of its own on the session's cluster, so that the migrator install of the other tests is not in the
way: created on every node with the citus extension and the workers registered in it (Citus keeps its metadata
per database). The extension files go into the nodes' sharedir as tests/test_extension.py installs them.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from citus_cluster import CitusCluster, bindir
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from reference_model import Event, dumps
from test_extension import extension_files

from pyapp.db import with_database

TS = Decimal(1_760_000_000)
DISTRIBUTED = {"memberships", "events", "membership_expiries", "snapshot_members"}
REFERENCE = {"settings", "identifier_types", "external_audiences", "audiences", "api_keys", "webhooks", "batches",
             "snapshots"}
COORDINATOR = {"membership_changes", "audience_size_deltas", "load_rejects"}


def install_extension_files(pg_config: Path) -> None:
    """The control file and every packaged script into pg_config's sharedir, each written next to its place and
    renamed into it (as tests/test_extension.py does); files already identical are left alone."""
    sharedir = subprocess.run([str(pg_config), "--sharedir"], capture_output=True, text=True, check=True).stdout
    directory = Path(sharedir.strip()) / "extension"
    for name, data in extension_files().items():
        if (directory / name).is_file() and (directory / name).read_bytes() == data:
            continue
        if not os.access(directory, os.W_OK):
            pytest.fail(f"cannot write {directory}: run `make install-extension PG_CONFIG={pg_config}` first")
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, directory / name)


@pytest.fixture(scope="module")
def extension_cluster_url(citus_cluster: CitusCluster) -> Iterator[str]:
    """A new database on every node of the cluster, with citus and the workers registered; its coordinator URL."""
    install_extension_files(bindir() / "pg_config")
    name = f"ext_{uuid.uuid4().hex[:8]}"
    nodes = [citus_cluster.coordinator, *citus_cluster.workers]
    try:
        for node in nodes:
            with psycopg.connect(node.url, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            with psycopg.connect(with_database(node.url, name), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION citus")
        url = with_database(citus_cluster.coordinator.url, name)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)",
                         (int(conninfo_to_dict(citus_cluster.coordinator.url)["port"]),))
            for worker in citus_cluster.workers:
                conn.execute("SELECT citus_add_node('127.0.0.1', %s)", (int(conninfo_to_dict(worker.url)["port"]),))
        yield url
    finally:
        for node in nodes:
            with psycopg.connect(node.url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def placements(conn) -> dict[str, str]:
    """Where each table of the schema is, by Citus's metadata: distributed, reference or coordinator."""
    return dict(conn.execute("""
        SELECT c.relname, CASE d.partmethod WHEN 'h' THEN 'distributed' WHEN 'n' THEN 'reference'
                                            ELSE 'coordinator' END
        FROM pg_class c LEFT JOIN pg_dist_partition d ON d.logicalrelid = c.oid
        WHERE c.relnamespace = 'passthrough'::regnamespace AND c.relkind = 'r'""").fetchall())


def test_create_extension_then_distribute_places_every_table_and_the_functions_answer(extension_cluster_url):
    with psycopg.connect(extension_cluster_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION passthrough")
        first = conn.execute("SELECT table_name, placement, action FROM passthrough.distribute()").fetchall()
        assert {t: p for t, p, _ in first} == {**{t: "distributed" for t in DISTRIBUTED},
                                              **{t: "reference" for t in REFERENCE},
                                              **{t: "coordinator" for t in COORDINATOR}}
        assert placements(conn) == {t: p for t, p, _ in first}
        second = conn.execute("SELECT table_name, action FROM passthrough.distribute()").fetchall()
        assert {action for _, action in second} == {"unchanged"}
        # still the extension's: every table a member of it
        assert conn.execute("""
            SELECT count(*) FROM pg_class c
            WHERE c.relnamespace = 'passthrough'::regnamespace AND c.relkind = 'r'
              AND NOT EXISTS (SELECT 1 FROM pg_depend d JOIN pg_extension x ON x.oid = d.refobjid
                              WHERE d.objid = c.oid AND d.deptype = 'e' AND x.extname = 'passthrough')
            """).fetchone()[0] == 0

        conn.execute("SELECT passthrough.enable()")
        conn.execute("SELECT passthrough.create_audience('seg_a', 'aud-a')")
        start = conn.execute("SELECT passthrough.current_change_cursor()").fetchone()[0]
        events = [Event("fs_user_id", f"c{i}", "aud-a", i % 3 != 0, TS + i) for i in range(12)]
        conn.execute("SELECT passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in events]),))
        conn.execute("SELECT passthrough.apply_event('fs_user_id', 'c1', 'aud-a', 'disqualify', %s)", (TS + 50,))
        members = {"c2", "c4", "c5", "c7", "c8", "c10", "c11"}  # qualified: i not a multiple of 3; c1 left
        assert conn.execute("SELECT name, size FROM passthrough.customer_audiences('fs_user_id', 'c2')"
                            ).fetchall() == [("seg_a", len(members))]
        assert conn.execute("SELECT * FROM passthrough.customer_audiences('fs_user_id', 'c3')").fetchall() == []
        assert {i for (i,) in conn.execute("SELECT identifier FROM passthrough.audience_members('seg_a')")} == members
        feed = conn.execute("SELECT change, identifier FROM passthrough.changes(%s, 100)", (start,)).fetchall()
        assert sorted(feed) == sorted([("entered", i) for i in members | {"c1"}] + [("exited", "c1")])
        assert [row[:2] for row in conn.execute(
            "SELECT action, qualified_after FROM passthrough.membership_history('fs_user_id', 'c1', 'seg_a')"
        ).fetchall()] == [("qualify", True), ("disqualify", False)]
