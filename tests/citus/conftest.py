"""Fixtures for the Citus tests (``make test-citus``): one local Citus cluster per test session.

``citus_cluster`` starts a coordinator and two workers (tests/citus_cluster.py) the first time a test asks
for it and stops them at the end of the session (tests/conftest.py); every test in this folder skips, saying
why, when the citus extension is not installed (the one skip the suite allows: CI cannot build Citus). ``citus_url`` is
the coordinator's database with Passthrough migrated and distributed (passthrough.distribute()).
The normal suite does not collect this folder (pyproject.toml: --ignore=tests/citus).
"""

from __future__ import annotations

import psycopg
import pytest
from citus_cluster import CitusCluster

from pyapp.db import connect


@pytest.fixture(scope="session")
def citus_cluster(citus_session_cluster: CitusCluster) -> CitusCluster:
    """The session's cluster (tests/conftest.py), which the single-node suite's databases share under
    $PASSTHROUGH_TEST_CITUS; stopped when the session ends."""
    return citus_session_cluster


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
