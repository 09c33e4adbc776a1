"""Fixtures for the Citus tests (``make test-citus``): one local Citus cluster per test session.

``citus_cluster`` starts a coordinator and two workers (tests/citus_cluster.py) the first time a test asks
for it and stops them at the end of the session; every test in this folder skips, saying why, when the
citus extension is not installed (the one skip the suite allows: CI cannot build Citus). ``citus_url`` is
the coordinator's database with Passthrough migrated and distributed (passthrough.distribute()).
The normal suite does not collect this folder (pyproject.toml: --ignore=tests/citus).
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from citus_cluster import CitusCluster, citus_missing, start_citus_cluster

from pyapp.db import connect


@pytest.fixture(scope="session")
def citus_cluster() -> Iterator[CitusCluster]:
    reason = citus_missing()
    if reason:
        pytest.skip(reason)
    cluster = start_citus_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def citus_migrated_url(citus_cluster: CitusCluster) -> str:
    """The coordinator's database with Passthrough installed by the migrator, not yet distributed."""
    from pyapp import migrate

    with connect(citus_cluster.url) as conn:
        migrate.migrate(conn)
    return citus_cluster.url


@pytest.fixture(scope="session")
def citus_url(citus_migrated_url: str) -> str:
    with psycopg.connect(citus_migrated_url, autocommit=True) as conn:
        conn.execute("SELECT * FROM passthrough.distribute()")
    return citus_migrated_url
