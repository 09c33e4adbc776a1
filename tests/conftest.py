"""The one way tests get PostgreSQL: a real server, chosen by tests/pgcluster.py.

Selection (first match wins):
  PASSTHROUGH_TEST_DSN=postgresql://...   an existing server (databases are created/dropped on it)
  PASSTHROUGH_TEST_PG_BINDIR=/usr/lib/postgresql/15/bin   a throwaway cluster from those binaries
  (neither)                               the embedded PostgreSQL 18 in a temp dir
PASSTHROUGH_TEST_PG_MAJOR=15 (optional, CI sets it): the server chosen must be that major version, else
every test that needs it errors.
PASSTHROUGH_TEST_CITUS=1 (`make test-citus`): the server is the coordinator of a local Citus cluster
(tests/citus_cluster.py, one per session, shared with tests/citus/), and the migrated template and every copy
of it are distributed (passthrough.distribute(), 4 shards per table) on every node; hypothesis runs a quarter
of each test's examples; tests marked `single_node` skip, each giving the documented reason. Without the citus
extension every test that needs the server skips, saying why.

Fixtures:
  pg_server_url      session   admin URL (the `postgres` database)
  pg_version         session   server_version_num, e.g. 150018 or 180001
  databases          session   creates and drops the suite's databases (create(name, template) -> url, drop(name))
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

import math
import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
import sqlhelpers
from citus_cluster import CITUS_ENV, CitusCluster, ClusterDatabases, citus_missing, on_citus, start_citus_cluster
from hypothesis import Phase, is_hypothesis_test
from hypothesis import settings as hypothesis_settings
from pgcluster import PgServer, PgStartError, create_database, drop_database, start_test_server

from pyapp.db import connect

EXPECTED_MAJOR_ENV = "PASSTHROUGH_TEST_PG_MAJOR"
# On the cluster: shards per distributed table (each is a table on a worker, made when a test's database is
# copied), and the share of each hypothesis test's examples run (a batch costs about 10 times as much there)
CITUS_SHARD_COUNT = 4
CITUS_EXAMPLE_SHARE = 0.25

# One template per pytest session: sessions sharing a server (several checkouts, one embedded server)
# must not migrate or drop each other's template.
TEMPLATE_DB = f"passthrough_template_{uuid.uuid4().hex[:12]}"

_server_key = pytest.StashKey["PgServer | BaseException"]()
_cluster_key = pytest.StashKey["CitusCluster | BaseException"]()


def _started_once(config: pytest.Config, key: pytest.StashKey, start, what: str):
    """What ``start()`` returned the first time, or the exception it raised then, re-raised as PgStartError
    (saying ``what``) by every later call: each server is started, or fails, once per session."""
    found = config.stash.get(key, None)
    if found is None:
        try:
            found = start()
        except Exception as exc:  # remembered, re-raised by every fixture that needs it
            found = exc
        config.stash[key] = found
    if isinstance(found, BaseException):
        raise PgStartError(f"{what}: {found}") from found
    return found


def get_citus_cluster(config: pytest.Config) -> CitusCluster:
    """The session's Citus cluster, started on first use (PgStartError, saying why, without citus)."""
    return _started_once(config, _cluster_key, start_citus_cluster, "no Citus cluster")


def _get_server(config: pytest.Config) -> PgServer:
    """Start the session's server on first use (normally from pytest_report_header)."""
    def start() -> PgServer:
        if on_citus():  # the cluster's coordinator: the cluster, not this, stops it
            server = get_citus_cluster(config).coordinator
            _check_expected_major(server)
            return server
        server = start_test_server()
        try:
            _check_expected_major(server)
        except BaseException:
            server.stop()
            raise
        return server

    return _started_once(config, _server_key, start, "no test PostgreSQL")


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
    if on_citus() and (reason := citus_missing()):
        return [f"postgresql: Citus cluster (${CITUS_ENV}): every test skips: {reason}"]
    try:
        server = _get_server(config)
    except Exception as exc:
        return [f"postgresql: FAILED TO START: {exc}"]
    forms = ", ".join(sorted(server.forms)) or "given URL only"
    citus = f" (the coordinator of a Citus cluster, ${CITUS_ENV})" if on_citus() else ""
    return [f"postgresql: {server.header}{citus}", f"postgresql url forms: {forms}"]


def pytest_unconfigure(config: pytest.Config) -> None:
    found = config.stash.get(_cluster_key, None)
    if isinstance(found, CitusCluster):  # its coordinator is the session's server then
        found.stop()
    found = config.stash.get(_server_key, None)
    if isinstance(found, PgServer):
        found.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the cluster: fewer hypothesis examples (CITUS_EXAMPLE_SHARE); a test marked ``single_node(reason)``
    skips and one marked ``citus_xfail(reason)`` is expected to fail (strictly), each giving its reason."""
    if not on_citus():
        return
    scaled: set[int] = set()  # the items of a parametrized test share its function: scale it once
    for item in items:
        if (marker := item.get_closest_marker("single_node")) is not None:
            item.add_marker(pytest.mark.skip(reason=f"single-node by design: {marker.args[0]}"))
        if (marker := item.get_closest_marker("citus_xfail")) is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"fails on Citus: {marker.args[0]}"))
        function = getattr(item, "obj", None)
        if function is not None and is_hypothesis_test(function):
            # where hypothesis keeps a test's @settings; its own pytest plugin replaces them the same way
            function = getattr(function, "__func__", function)
            if id(function) in scaled:
                continue
            scaled.add(id(function))
            current = function._hypothesis_internal_use_settings
            # a known failure is not shrunk: on the cluster that takes minutes and shows nothing new
            phases = [p for p in current.phases if p != Phase.shrink] if item.get_closest_marker("citus_xfail") \
                else current.phases
            function._hypothesis_internal_use_settings = hypothesis_settings(
                current, max_examples=max(1, math.ceil(current.max_examples * CITUS_EXAMPLE_SHARE)), phases=phases)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "url_form" in metafunc.fixturenames:
        try:
            forms = ["given", *sorted(_get_server(metafunc.config).forms)]
        except Exception:
            forms = ["given"]  # the fixture will raise the start error
        metafunc.parametrize("url_form", forms, indirect=True)


# --------------------------------------------------------------------------- session fixtures


def _skip_without_citus() -> None:
    """The one skip the suite allows: CI cannot build Citus (docs/scale-out.md, Getting Citus)."""
    reason = citus_missing()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server(pytestconfig: pytest.Config) -> PgServer:
    if on_citus():
        _skip_without_citus()
    return _get_server(pytestconfig)


@pytest.fixture(scope="session")
def citus_session_cluster(pytestconfig: pytest.Config) -> CitusCluster:
    """The session's Citus cluster (tests/citus/conftest.py's ``citus_cluster``); skips without citus."""
    _skip_without_citus()
    return get_citus_cluster(pytestconfig)


@pytest.fixture(scope="session")
def pg_server_url(pg_server: PgServer) -> str:
    return pg_server.url


@pytest.fixture(scope="session")
def pg_version(pg_server_url: str) -> int:
    with psycopg.connect(pg_server_url) as c:
        return int(c.execute("SHOW server_version_num").fetchone()[0])


class ServerDatabases:
    """The suite's databases on the one test server."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url

    def create(self, name: str, template: str = "template0") -> str:
        return create_database(self.admin_url, name, template=template)

    def drop(self, name: str) -> None:
        drop_database(self.admin_url, name)


@pytest.fixture(scope="session")
def databases(pytestconfig: pytest.Config, pg_server_url: str) -> ServerDatabases | ClusterDatabases:
    """Where tests make their databases: the server, or under $PASSTHROUGH_TEST_CITUS every node of the cluster
    (a copy of the distributed template is distributed too: tests/citus_cluster.py, ClusterDatabases)."""
    if on_citus():
        return ClusterDatabases(get_citus_cluster(pytestconfig))
    return ServerDatabases(pg_server_url)


def _migrate(url: str) -> None:
    from pyapp import migrate

    with connect(url) as c:
        migrate.migrate(c)


@pytest.fixture(scope="session")
def migrated_template(databases: ServerDatabases | ClusterDatabases) -> Iterator[str]:
    try:
        if isinstance(databases, ClusterDatabases):
            databases.create_template(TEMPLATE_DB, _migrate, shard_count=CITUS_SHARD_COUNT)
        else:
            _migrate(databases.create(TEMPLATE_DB, template="template0"))
        yield TEMPLATE_DB
    finally:
        databases.drop(TEMPLATE_DB)


# --------------------------------------------------------------------------- per-test clock and databases


@pytest.fixture(autouse=True)
def test_clock() -> Iterator[None]:
    sqlhelpers.start_test_clock()
    yield
    sqlhelpers.stop_test_clock()



@pytest.fixture
def make_database(databases: ServerDatabases | ClusterDatabases) -> Iterator[Callable[..., str]]:
    """Factory for throwaway databases: ``make_database(template="template0") -> url``."""
    created: list[str] = []

    def make(template: str = "template0", prefix: str = "test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex}"
        created.append(name)
        return databases.create(name, template=template)

    yield make
    for name in reversed(created):
        databases.drop(name)


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
