"""The one way tests get PostgreSQL: a real server, chosen by tests/pgcluster.py.

Selection (first match wins):
  PASSTHROUGH_TEST_DSN=postgresql://...   an existing server (databases are created/dropped on it)
  PASSTHROUGH_TEST_PG_BINDIR=/usr/lib/postgresql/15/bin   a throwaway cluster from those binaries
  (neither)                               the embedded PostgreSQL 18 in a temp dir
PASSTHROUGH_TEST_PG_MAJOR=15 (optional, CI sets it): the server chosen must be that major version, else
every test that needs it errors.

Fixtures:
  pg_server_url      session   admin URL (the `postgres` database)
  pg_version         session   server_version_num, e.g. 150018 or 180001
  migrated_template  session   name of `passthrough_template_<random>`, migrated once with pyapp.migrate.migrate
  db_url             function  URL of a new database copied from the template; dropped afterwards
  conn               function  psycopg connection to db_url, autocommit=True
  fresh_db_url       function  URL of a new EMPTY (unmigrated) database; dropped afterwards
  make_database      function  factory: make_database(template=...) -> URL, all dropped afterwards
  url_form           function  parametrized over the URL forms the server accepts
                               ("given", "socket", "tcp"): that form's admin URL
  test_clock         function  autouse: sqlhelpers.now() / at() / ts_at() count from when each test starts

If the server cannot be started or reached, every test that needs it errors; nothing is skipped.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
import sqlhelpers
from pgcluster import PgServer, PgStartError, create_database, drop_database, start_test_server

from pyapp.db import connect

EXPECTED_MAJOR_ENV = "PASSTHROUGH_TEST_PG_MAJOR"

# One template per pytest session: sessions sharing a server (several checkouts, one embedded server)
# must not migrate or drop each other's template.
TEMPLATE_DB = f"passthrough_template_{uuid.uuid4().hex[:12]}"

_server_key = pytest.StashKey["PgServer | BaseException"]()


def _get_server(config: pytest.Config) -> PgServer:
    """Start the session's server on first use (normally from pytest_report_header)."""
    found = config.stash.get(_server_key, None)
    if found is None:
        try:
            found = start_test_server()
            try:
                _check_expected_major(found)
            except BaseException:
                found.stop()
                raise
        except Exception as exc:  # remembered, re-raised by every fixture that needs the server
            found = exc
        config.stash[_server_key] = found
    if isinstance(found, BaseException):
        raise PgStartError(f"no test PostgreSQL: {found}") from found
    return found


def _check_expected_major(server: PgServer) -> None:
    """CI names the major version each of its passes is for, so that a pass cannot quietly test another
    server (an inherited PASSTHROUGH_TEST_DSN, a pg_config of another version)."""
    expected = os.environ.get(EXPECTED_MAJOR_ENV, "")
    if expected and server.version_num // 10000 != int(expected):
        raise PgStartError(f"${EXPECTED_MAJOR_ENV} is {expected}, but the test server is PostgreSQL "
                           f"{server.version} ({server.description})")


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (CI timeouts, `kill`) unwinds like Ctrl-C, so pytest_unconfigure still stops the server.
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _sigterm_to_keyboard_interrupt)


def _sigterm_to_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt("SIGTERM")


def pytest_report_header(config: pytest.Config) -> list[str]:
    try:
        server = _get_server(config)
    except Exception as exc:
        return [f"postgresql: FAILED TO START: {exc}"]
    forms = ", ".join(sorted(server.forms)) or "given URL only"
    return [f"postgresql: {server.header}", f"postgresql url forms: {forms}"]


def pytest_unconfigure(config: pytest.Config) -> None:
    found = config.stash.get(_server_key, None)
    if isinstance(found, PgServer):
        found.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "url_form" in metafunc.fixturenames:
        try:
            forms = ["given", *sorted(_get_server(metafunc.config).forms)]
        except Exception:
            forms = ["given"]  # the fixture will raise the start error
        metafunc.parametrize("url_form", forms, indirect=True)


# --------------------------------------------------------------------------- session fixtures


@pytest.fixture(scope="session")
def pg_server(pytestconfig: pytest.Config) -> PgServer:
    return _get_server(pytestconfig)


@pytest.fixture(scope="session")
def pg_server_url(pg_server: PgServer) -> str:
    return pg_server.url


@pytest.fixture(scope="session")
def pg_version(pg_server_url: str) -> int:
    with psycopg.connect(pg_server_url) as c:
        return int(c.execute("SHOW server_version_num").fetchone()[0])


@pytest.fixture(scope="session")
def migrated_template(pg_server_url: str) -> Iterator[str]:
    from pyapp import migrate

    url = create_database(pg_server_url, TEMPLATE_DB, template="template0")
    try:
        with connect(url) as c:
            migrate.migrate(c)
        yield TEMPLATE_DB
    finally:
        drop_database(pg_server_url, TEMPLATE_DB)


# --------------------------------------------------------------------------- per-test clock and databases


@pytest.fixture(autouse=True)
def test_clock() -> Iterator[None]:
    sqlhelpers.start_test_clock()
    yield
    sqlhelpers.stop_test_clock()



@pytest.fixture
def make_database(pg_server_url: str) -> Iterator[Callable[..., str]]:
    """Factory for throwaway databases: ``make_database(template="template0") -> url``."""
    created: list[str] = []

    def make(template: str = "template0", prefix: str = "test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex}"
        created.append(name)
        return create_database(pg_server_url, name, template=template)

    yield make
    for name in reversed(created):
        drop_database(pg_server_url, name)


@pytest.fixture
def db_url(make_database: Callable[..., str], migrated_template: str) -> str:
    return make_database(template=migrated_template)


@pytest.fixture
def fresh_db_url(make_database: Callable[..., str]) -> str:
    return make_database(template="template0", prefix="test_fresh")


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with connect(db_url, autocommit=True) as c:
        yield c


@pytest.fixture
def url_form(request: pytest.FixtureRequest, pg_server: PgServer) -> str:
    if request.param == "given":
        return pg_server.url
    return pg_server.forms[request.param]
