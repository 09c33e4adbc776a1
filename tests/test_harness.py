"""Tests of the infrastructure itself: pyapp.db, pyapp.embedded, the CLI plumbing and the fixtures."""

from __future__ import annotations

import uuid
from pathlib import Path

import pg8000.dbapi
import psycopg
import pytest
from pgcluster import create_database, drop_database

from pyapp import cli
from pyapp.db import DRIVERS, connect, pg8000_params, with_database
from pyapp.embedded import EmbeddedPostgres

# --------------------------------------------------------------------------- pyapp.db.connect


def _dbname(url: str) -> str:
    with connect(url) as c:
        return c.execute("SELECT current_database()").fetchone()[0]


@pytest.mark.parametrize("driver", DRIVERS)
def test_connect_each_url_form(driver: str, url_form: str, db_url: str) -> None:
    """Both drivers reach the same database through every URL form the server offers
    (unix socket, TCP, and the URL as the harness got it)."""
    target = _dbname(db_url)
    c = connect(with_database(url_form, target), driver=driver)
    try:
        expected_type = psycopg.Connection if driver == "psycopg" else pg8000.dbapi.Connection
        assert isinstance(c, expected_type)
        cur = c.cursor()
        cur.execute("SELECT current_database(), 1 + 1")
        assert tuple(cur.fetchone()) == (target, 2)
    finally:
        c.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_connect_autocommit_flag(driver: str, db_url: str) -> None:
    # autocommit=False: work is transactional and a rollback discards it.
    c = connect(db_url, driver=driver)
    try:
        cur = c.cursor()
        cur.execute("CREATE TABLE rolled_back (x int)")
        c.rollback()
        cur.execute("SELECT to_regclass('rolled_back') IS NULL")
        assert cur.fetchone()[0] is True
        c.rollback()
    finally:
        c.close()

    # autocommit=True: another session sees the table without any commit().
    c = connect(db_url, driver=driver, autocommit=True)
    try:
        c.cursor().execute("CREATE TABLE kept (x int)")
        with connect(db_url) as other:
            assert other.execute("SELECT to_regclass('kept') IS NOT NULL").fetchone()[0] is True
    finally:
        c.close()


def test_connect_rejects_unknown_driver_and_scheme(db_url: str) -> None:
    with pytest.raises(ValueError, match="unknown driver"):
        connect(db_url, driver="asyncpg")
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        connect("mysql://root@localhost/x")


def test_pg8000_params_unix_socket_forms() -> None:
    assert pg8000_params("postgresql://postgres:@/postgres?host=/tmp/x/pg") == {
        "user": "postgres",
        "password": None,
        "database": "postgres",
        "unix_sock": "/tmp/x/pg/.s.PGSQL.5432",
    }
    assert pg8000_params("postgresql://u@/db?host=/run/pg/&port=5433")["unix_sock"] == "/run/pg/.s.PGSQL.5433"
    # percent-encoded socket directory in the host part (libpq accepts this too); case is kept
    assert pg8000_params("postgres://u@%2FTmp%2FSock:6000/db")["unix_sock"] == "/Tmp/Sock/.s.PGSQL.6000"


def test_pg8000_params_tcp_and_overrides() -> None:
    params = pg8000_params("postgresql://al%40ice:p%2Bss%3Aw@DB.example:6543/My%20DB?application_name=pt")
    assert params == {
        "user": "al@ice",
        "password": "p+ss:w",
        "database": "My DB",
        "host": "DB.example",
        "port": 6543,
        "application_name": "pt",
    }
    assert pg8000_params("postgresql://[::1]:5433/x")["host"] == "::1"
    # query parameters win over the URL's parts, as in libpq; database defaults to the user name
    over = pg8000_params("postgresql://a@h/ignored?dbname=real&user=b&port=7")
    assert (over["database"], over["user"], over["port"]) == ("real", "b", 7)
    assert pg8000_params("postgresql://carol@h")["database"] == "carol"
    with pytest.raises(ValueError, match="multi-host"):
        pg8000_params("postgresql://h1,h2/db")
    with pytest.raises(ValueError, match="not supported"):
        pg8000_params("postgresql://h/db?target_session_attrs=any")


# --------------------------------------------------------------------------- pyapp.db.with_database


def test_with_database_keeps_server_and_options() -> None:
    assert (
        with_database("postgresql://postgres:@/postgres?host=/tmp/x/pg", "passthrough")
        == "postgresql://postgres:@/passthrough?host=/tmp/x/pg"
    )
    assert with_database("postgresql://u:p@h:5/a?sslmode=require", "b") == "postgresql://u:p@h:5/b?sslmode=require"
    assert with_database("postgresql://h", "b") == "postgresql://h/b"
    # an explicit dbname parameter would override the path, so it is dropped
    assert with_database("postgresql://h/a?dbname=a&port=5", "b") == "postgresql://h/b?port=5"
    assert with_database("postgresql://h/a", "we ird/ü") == "postgresql://h/we%20ird%2F%C3%BC"


@pytest.mark.parametrize("driver", DRIVERS)
def test_with_database_reaches_awkward_names(driver: str, pg_server_url: str) -> None:
    name = f"test_We ird/ü-{uuid.uuid4().hex[:8]}"
    url = create_database(pg_server_url, name)
    try:
        assert url == with_database(pg_server_url, name)
        c = connect(url, driver=driver)
        try:
            cur = c.cursor()
            cur.execute("SELECT current_database()")
            assert cur.fetchone()[0] == name
        finally:
            c.close()
    finally:
        drop_database(pg_server_url, name)


# --------------------------------------------------------------------------- fixtures


def _relations(url: str) -> set[str]:
    with connect(url) as c:
        rows = c.execute(
            """SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'"""
        ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.parametrize("round", [1, 2])
def test_db_url_is_a_fresh_copy_each_test(round: int, conn: psycopg.Connection) -> None:
    # Passes twice only if the second test does not see the first one's table.
    conn.execute("CREATE TABLE isolation_probe (round int)")
    conn.execute("INSERT INTO isolation_probe VALUES (%s)", (round,))
    assert conn.execute("SELECT count(*) FROM isolation_probe").fetchone()[0] == 1


def test_databases_from_template_are_isolated(make_database, migrated_template: str, pg_server_url: str) -> None:
    a, b = make_database(template=migrated_template), make_database(template=migrated_template)
    assert _dbname(a) != _dbname(b)
    with connect(a, autocommit=True) as ca:
        ca.execute("CREATE TABLE only_in_a (x int)")
    assert "public.only_in_a" in _relations(a)
    assert "public.only_in_a" not in _relations(b)
    assert "public.only_in_a" not in _relations(with_database(pg_server_url, migrated_template))


def test_db_url_is_migrated_and_fresh_db_url_is_empty(
    db_url: str, fresh_db_url: str, migrated_template: str, pg_server_url: str
) -> None:
    migrated = _relations(db_url)
    assert migrated, "the template should contain the migrated schema"
    assert "passthrough_migrations.applied" in migrated
    assert migrated == _relations(with_database(pg_server_url, migrated_template))
    assert _relations(fresh_db_url) == set()
    with connect(db_url) as c:
        applied = [r[0] for r in c.execute("SELECT filename FROM passthrough_migrations.applied")]
    assert applied, "migrate() should have recorded what it applied"


def test_pg_version(pg_version: int, conn: psycopg.Connection) -> None:
    assert pg_version >= 130000  # DROP DATABASE ... WITH (FORCE)
    assert conn.info.server_version == pg_version


# --------------------------------------------------------------------------- pyapp.embedded


def test_embedded_data_persists_across_restarts(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "data")
    url = pg.start()
    try:
        assert url == pg.url and _dbname(url) == "passthrough"
        assert "host=" in url  # unix socket only
        with connect(url, autocommit=True) as c:
            c.execute("CREATE TABLE kept (v text)")
            c.execute("INSERT INTO kept VALUES ('still here')")
        pid_file = pg.pgdata / "postmaster.pid"
        assert pid_file.exists()
    finally:
        pg.stop()
    assert not pid_file.exists(), "the server should be stopped cleanly on stop()"

    with EmbeddedPostgres(tmp_path / "data") as again:
        assert again.url == url
        with connect(again.url, driver="pg8000") as c:
            cur = c.cursor()
            cur.execute("SELECT v FROM kept")
            assert [tuple(r) for r in cur.fetchall()] == [("still here",)]
        assert again.psql_path.is_file()
    assert not pid_file.exists()


def test_embedded_data_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PASSTHROUGH_DATA_DIR", str(tmp_path / "x"))
    assert EmbeddedPostgres().pgdata == tmp_path / "x" / "pgdata"
    monkeypatch.delenv("PASSTHROUGH_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    assert EmbeddedPostgres().data_dir == tmp_path / ".passthrough"


# --------------------------------------------------------------------------- CLI plumbing


def test_cli_migrate_status_enable_disable(fresh_db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["enable", "--database-url", fresh_db_url]) == 1
    assert "passthrough migrate" in capsys.readouterr().err  # the hint

    assert cli.main(["migrate", "--database-url", fresh_db_url]) == 0
    first = capsys.readouterr().err
    assert "migrations: applied" in first

    assert cli.main(["migrate", "--database-url", fresh_db_url]) == 0
    assert "migrations: up to date" in capsys.readouterr().err

    assert cli.main(["status", "--database-url", fresh_db_url]) == 0
    out = capsys.readouterr().out
    assert "filename" in out and ".sql" in out

    for command, expected in (("disable", False), ("enable", True)):
        assert cli.main([command, "--database-url", fresh_db_url]) == 0
        assert f"passthrough {command}d" in capsys.readouterr().out
        with connect(fresh_db_url) as c:
            assert c.execute("SELECT passthrough.is_enabled()").fetchone()[0] is expected


def test_cli_reports_unreachable_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql://postgres@/postgres?host={tmp_path}&connect_timeout=2"
    assert cli.main(["status", "--database-url", url]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and str(tmp_path) in err


def test_cli_database_url_from_env(
    fresh_db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PASSTHROUGH_DATABASE_URL", fresh_db_url)
    assert cli.main(["status"]) == 0
    assert "$PASSTHROUGH_DATABASE_URL" in capsys.readouterr().err
