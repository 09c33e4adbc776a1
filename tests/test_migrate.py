"""The packaged migrator: fresh install, re-run, refusal of edited history, concurrency, both drivers."""

from __future__ import annotations

import threading

import pytest

from pyapp import migrate
from pyapp.db import DRIVERS, connect


def tables(url):
    with connect(url) as conn:
        return {
            name
            for (name,) in conn.execute(
                "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname LIKE 'passthrough%'"
            ).fetchall()
        }


@pytest.mark.parametrize("driver", DRIVERS)
def test_fresh_install_then_rerun_is_a_no_op(fresh_db_url, driver):
    chain = migrate.packaged_migrations()
    conn = connect(fresh_db_url, driver=driver)
    try:
        assert migrate.migrate(conn) == [m.filename for m in chain]
        assert migrate.migrate(conn) == []
        status = migrate.status(conn)
    finally:
        conn.close()
    assert [(s["filename"], s["applied"], s["changed_since_applied"]) for s in status] == [
        (m.filename, True, False) for m in chain
    ]
    assert {"passthrough.memberships", "passthrough.events", "passthrough_migrations.applied"} <= tables(fresh_db_url)


def test_the_chain_starts_with_an_install_script():
    chain = migrate.packaged_migrations()
    assert chain[0].filename == f"passthrough--{chain[0].version}.sql"
    assert all("--" in m.filename.removeprefix("passthrough--") for m in chain[1:])


def test_status_of_an_empty_database(fresh_db_url):
    with connect(fresh_db_url) as conn:
        assert {s["applied"] for s in migrate.status(conn)} == {False}


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_edited_applied_migration_is_refused(fresh_db_url, driver):
    original = migrate.packaged_migrations()
    conn = connect(fresh_db_url, driver=driver)
    try:
        migrate.migrate(conn, original)
        edited = [migrate.Migration(original[0].filename, original[0].version, original[0].sql + "\n-- edited\n")]
        with pytest.raises(migrate.MigrationError, match="was changed after it was applied"):
            migrate.migrate(conn, edited + original[1:])
        assert migrate.status(conn, edited)[0]["changed_since_applied"] is True
    finally:
        conn.close()


def test_history_from_a_newer_package_is_refused(fresh_db_url):
    chain = migrate.packaged_migrations()
    with connect(fresh_db_url) as conn:
        newer = chain + [migrate.Migration("passthrough--9.9.8--9.9.9.sql", "9.9.9", "SELECT 1;")]
        migrate.migrate(conn, newer)
        with pytest.raises(migrate.MigrationError, match="does not ship"):
            migrate.migrate(conn, chain)


def test_a_failing_migration_leaves_nothing_half_applied(fresh_db_url):
    chain = migrate.packaged_migrations()
    broken = migrate.Migration("passthrough--0.0.1--0.0.2.sql", "0.0.2",
                               "CREATE TABLE passthrough.half (a int); SELECT 1/0;")
    with connect(fresh_db_url) as conn:
        with pytest.raises(Exception, match="division by zero"):
            migrate.migrate(conn, chain + [broken])
        assert [s["applied"] for s in migrate.status(conn, chain + [broken])] == [True] * len(chain) + [False]
    assert "passthrough.half" not in tables(fresh_db_url)


def test_concurrent_migrators_apply_each_file_once(fresh_db_url):
    results, errors = [], []
    barrier = threading.Barrier(4)

    def run(driver):
        try:
            conn = connect(fresh_db_url, driver=driver)
            try:
                barrier.wait()
                results.append(migrate.migrate(conn))
            finally:
                conn.close()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(DRIVERS[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    applied = [name for names in results for name in names]
    assert sorted(applied) == sorted(m.filename for m in migrate.packaged_migrations())


def test_upgrade_chain_is_followed_in_order(tmp_path):
    for name, text in {
        "passthrough--1.0.0.sql": "a",
        "passthrough--1.0.0--1.1.0.sql": "b",
        "passthrough--1.1.0--1.10.0.sql": "c",
        "passthrough--1.1.0.sql": "full 1.1.0 (for CREATE EXTENSION only)",
        "passthrough--0.9.0--0.9.1.sql": "unreachable",
    }.items():
        (tmp_path / name).write_text(text)
    chain = migrate.packaged_migrations(tmp_path)
    assert [(m.filename, m.version) for m in chain] == [
        ("passthrough--1.0.0.sql", "1.0.0"),
        ("passthrough--1.0.0--1.1.0.sql", "1.1.0"),
        ("passthrough--1.1.0--1.10.0.sql", "1.10.0"),
    ]
