"""pyapp/errors.py against docs/errors.md, with errors raised by a real PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from pyapp import errors
from pyapp.db import connect

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "docs" / "errors.md").read_text()


def documented_rows() -> list[tuple[str, str, int, str | None]]:
    """(sqlstate, name, HTTP status, GraphQL code or None) for every row of the table in docs/errors.md."""
    found = []
    for line in DOCS.splitlines():
        if re.match(r"^\|\s*PT\w{3}\s*\|", line):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            sqlstate, name, http, graphql = cells[0], cells[1], cells[-2], cells[-1]
            found.append((sqlstate, name, int(http), None if graphql == "-" else graphql))
    return found


DOCUMENTED = documented_rows()


@pytest.fixture(scope="module")
def server_conn(pg_server_url):
    """A connection to the test server's admin database: raising errors needs no schema (and no new database)."""
    with connect(pg_server_url, autocommit=True) as c:
        yield c


def raised(conn: psycopg.Connection, sqlstate: str, *, detail: str = "", hint: str = "") -> psycopg.Error:
    """The exception psycopg raises for a RAISE with this SQLSTATE."""
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(
            "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = %s, MESSAGE = 'boom', DETAIL = %s, HINT = %s; END $$"
            % tuple(psycopg.sql.quote(v) for v in (sqlstate, detail or "none", hint or "none"))
        )
    assert caught.value.sqlstate == sqlstate
    return caught.value


def test_the_table_is_found_and_every_code_is_unique():
    codes = [row[0] for row in DOCUMENTED]
    assert len(codes) >= 12 and "PT001" in codes
    assert len(set(codes)) == len(codes)


@pytest.mark.parametrize("sqlstate, name, http, graphql", DOCUMENTED, ids=[row[0] for row in DOCUMENTED])
def test_each_documented_error_is_mapped_as_documented(server_conn, sqlstate, name, http, graphql):
    assert sqlstate in errors.DOMAIN_ERRORS, f"docs/errors.md lists {sqlstate}: add it to pyapp/errors.DOMAIN_ERRORS"
    assert errors.DOMAIN_ERRORS[sqlstate] == errors.DomainError(sqlstate, name, http, graphql)
    assert errors.http_status(sqlstate) == http
    assert errors.graphql_code(sqlstate) == graphql
    report = errors.report(raised(server_conn, sqlstate, detail="field: some_field", hint="do this"))
    assert (report.status, report.code, report.sqlstate) == (http, name, sqlstate)
    assert (report.message, report.field, report.hint) == ("boom", "some_field", "do this")


def test_every_mapped_error_is_documented():
    assert sorted(errors.DOMAIN_ERRORS) == sorted(row[0] for row in DOCUMENTED)


def test_every_pt_sqlstate_raised_in_sql_is_documented():
    raised_in_sql = set()
    for source in (ROOT / "sql").rglob("*.sql"):
        raised_in_sql |= set(re.findall(r"ERRCODE\s*=\s*'(PT\w{3})'", source.read_text()))
    missing = raised_in_sql - {row[0] for row in DOCUMENTED}
    assert not missing, f"raised in sql/ but not in docs/errors.md (nor mapped in pyapp/errors.py): {sorted(missing)}"


def test_invalid_events_detail_becomes_invalids(conn):
    conn.execute("SELECT passthrough.enable()")
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("""SELECT passthrough.apply_events('[{"type": "passthrough"}, 5]')""")
    report = errors.report(caught.value)
    assert (report.status, report.code) == (400, "invalid_events")
    assert [item["event"] for item in report.invalids] == [0, 1]
    assert report.invalids[1] == {
        "event": 1,
        "message": "event: must be a JSON object, got number",
        "problems": ["event: must be a JSON object, got number"],
    }


def test_invalid_rows_detail_becomes_invalids(conn):
    from pyapp.ingest.staging import StagedRow, format_row
    from pyapp.ingest.snapshot import SnapshotRefused, import_rows

    payload = format_row(2, StagedRow(type="passthrough", action="qualify", identifier_type="fs_user_id",
                                      identifier="u1", audience_id="other"))
    # and a row of aud-1: rows that all name one other audience are PT024, not PT020
    payload += format_row(3, StagedRow(type="passthrough", action="qualify", identifier_type="fs_user_id",
                                       identifier="u2", audience_id="aud-1"))
    conn.autocommit = False
    with pytest.raises(SnapshotRefused) as caught:
        import_rows(conn, payload.encode(), "aud-1", dry_run=True)
    conn.rollback()
    report = errors.report(caught.value.__cause__)
    assert (report.status, report.code, report.sqlstate) == (400, "invalid_rows", "PT020")
    assert report.invalids == [{
        "row": 2,
        "message": 'data.audience_id: this is a snapshot of "aud-1", got "other"',
        "problems": ['data.audience_id: this is a snapshot of "aud-1", got "other"'],
    }]


def transient_sqlstates_in_docs() -> set[str]:
    paragraph = DOCS[DOCS.index("Errors PostgreSQL itself raises") :].split("\n\n")[0]
    paragraph = paragraph[: paragraph.index("transient")]
    codes = set(re.findall(r"\b\d\d[0-9A-Z]\d\d\b", paragraph))
    for first, last in re.findall(r"\b(\d\dP\d\d)-(\d\dP\d\d)\b", paragraph):
        codes |= {f"{first[:3]}{n:02d}" for n in range(int(first[3:]), int(last[3:]) + 1)}
    return codes


def test_the_transient_sqlstates_the_docs_name_are_503():
    documented = transient_sqlstates_in_docs()
    assert {"40001", "40P01", "57P01", "57P02", "57P03"} <= documented
    for sqlstate in documented:
        assert errors.http_status(sqlstate) == 503, sqlstate


@pytest.mark.parametrize("sqlstate", ["40001", "40P01", "53300", "57P01", "57P03", "08006"])
def test_transient_errors_from_the_server_are_503(server_conn, sqlstate):
    report = errors.report(raised(server_conn, sqlstate))
    assert (report.status, report.code, report.retryable) == (503, "database_unavailable", True)
    assert report.message == errors.UNAVAILABLE_MESSAGE  # says nothing about the server


def test_a_terminated_backend_is_503(pg_server_url, server_conn):
    with connect(pg_server_url, autocommit=True) as victim:
        server_conn.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
        with pytest.raises(psycopg.Error) as caught:
            victim.execute("SELECT 1")
    assert errors.is_transient(caught.value)
    assert errors.report(caught.value).status == 503


def test_a_refused_connection_is_503(tmp_path):
    with pytest.raises(psycopg.Error) as caught:
        psycopg.connect(f"postgresql://postgres@/postgres?host={tmp_path}&connect_timeout=2")
    assert caught.value.sqlstate is None
    assert errors.report(caught.value).status == 503


def test_a_pool_timeout_is_503(tmp_path):
    pool = ConnectionPool(f"postgresql://postgres@/postgres?host={tmp_path}", min_size=0, max_size=1, timeout=0.2, open=True)
    try:
        with pytest.raises(psycopg.Error) as caught, pool.connection():
            pass
    finally:
        pool.close()
    assert errors.report(caught.value).status == 503


def test_text_postgresql_cannot_store_is_400(server_conn):
    with pytest.raises(psycopg.Error) as caught:
        server_conn.execute("""SELECT '{"a": "\\u0000"}'::jsonb""")
    report = errors.report(caught.value)
    assert (report.status, report.code, report.sqlstate) == (400, "invalid_input", "22P05")


def test_other_errors_are_500_and_reveal_nothing(server_conn):
    with pytest.raises(psycopg.Error) as caught:
        server_conn.execute("SELECT 1 / 0")
    report = errors.report(caught.value)
    assert (report.status, report.code, report.message) == (500, "internal_error", errors.INTERNAL_MESSAGE)
    assert errors.report(RuntimeError("secret")).message == errors.INTERNAL_MESSAGE
    assert errors.http_status("42883") == 500 and errors.graphql_code("42883") is None


def test_text_the_driver_refuses_is_400(server_conn):
    with pytest.raises(psycopg.Error) as caught:
        server_conn.execute("SELECT %s::text", ("a\x00b",))
    report = errors.report(caught.value)
    assert (report.status, report.code, report.sqlstate) == (400, "invalid_input", None)
    assert "NUL" in report.message


def test_the_graphql_facade_raises_no_sqlstate_of_its_own():
    # SQL raises the PT codes; the facade's own argument checks use GraphQL codes (pyapp/web/graphql/errors.py)
    for path in sorted((ROOT / "pyapp" / "web" / "graphql").glob("*.py")):
        assert not re.search(r"[\"']PT\d{3}[\"']", path.read_text()), path  # a PT code as a string literal


def test_one_reader_of_postgresql_s_error_fields(server_conn):
    with pytest.raises(psycopg.Error) as caught:
        server_conn.execute("DO $$BEGIN RAISE EXCEPTION USING ERRCODE = 'PT006', MESSAGE = 'no such thing', "
                            "DETAIL = 'field: name', HINT = 'look again'; END$$")
    assert errors.sql_error_fields(caught.value) == ("PT006", "no such thing", "field: name", "look again")
    assert errors.describe(caught.value) == "no such thing\ndetail: field: name\nhint: look again"
    assert (errors.report(caught.value).message, errors.report(caught.value).field) == ("no such thing", "name")
    # no other module reads diag.message_primary: pyapp/errors.py is the one place
    for path in sorted((ROOT / "pyapp").rglob("*.py")):
        if path.name != "errors.py" or path.parent.name != "pyapp":
            assert "message_primary" not in path.read_text(), path
