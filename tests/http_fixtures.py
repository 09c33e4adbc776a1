"""Fixtures for the HTTP tests: a TestClient on the app against a real database, API keys.

Test modules load them with ``pytest_plugins = ["http_fixtures"]``; plain helpers are in http_helpers.py.

Creating a database per test costs about 0.3 s, so each test module gets one database
(``http_database_url``) and every test starts from it emptied: ``db`` deletes all data, API keys
included, and turns passthrough off. A test that changes the schema (a trigger, say) must undo it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from http_helpers import TEST_CONFIG, TestClient, create_key, make_client
from sqlhelpers import reset_data

from pyapp.db import connect
from pyapp.web import ApiConfig


@pytest.fixture(scope="module")
def http_database_url(databases, migrated_template: str) -> Iterator[str]:
    """A migrated database shared by the tests of one module (``db`` empties it before each); distributed
    under $PASSTHROUGH_TEST_CITUS (tests/conftest.py)."""
    name = f"test_http_{uuid.uuid4().hex}"
    url = databases.create(name, template=migrated_template)
    yield url
    databases.drop(name)


@pytest.fixture
def db(http_database_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the module's database, emptied and with passthrough off."""
    with connect(http_database_url, autocommit=True) as conn:
        reset_data(conn)
        conn.execute("DELETE FROM passthrough.api_keys")
        conn.execute("SELECT passthrough.disable()")
        conn.execute("SELECT passthrough.set_setting('public_passthrough_events', 'off')")  # the default
        yield conn


@pytest.fixture
def api_config() -> ApiConfig:
    return TEST_CONFIG


@pytest.fixture
def client(db: psycopg.Connection, http_database_url: str, api_config: ApiConfig) -> Iterator[TestClient]:
    """A TestClient on a new app (its lifespan run: the pool is open) against the module's database."""
    with make_client(http_database_url, api_config) as test_client:
        yield test_client


@pytest.fixture
def private_key(db: psycopg.Connection) -> str:
    return create_key(db, "test-private", "private")


@pytest.fixture
def public_key(db: psycopg.Connection) -> str:
    return create_key(db, "test-public", "public")


@pytest.fixture
def enabled(db: psycopg.Connection) -> psycopg.Connection:
    db.execute("SELECT passthrough.enable()")
    return db


@pytest.fixture
def make_key(db: psycopg.Connection) -> Callable[[str, str], str]:
    """make_key(name, scope) -> a new API key."""
    return lambda name, scope: create_key(db, name, scope)
