"""docs/dba.md's SQL API table is the catalog's list of public functions, so it cannot drift.

Every function of schema passthrough whose name does not start with `_` has one row, with its
arguments exactly as pg_get_function_arguments() prints them (names, types, defaults) and its result as
pg_get_function_result() does; every row names an existing function, says what it does, and lists
its errors with SQLSTATEs that docs/errors.md defines.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DBA = ROOT / "docs" / "dba.md"
ERRORS = ROOT / "docs" / "errors.md"
MARKER = "<!-- sql-api-table:"
ROW = re.compile(r"^\| `passthrough\.(?P<signature>[a-z][a-z0-9_]*\(.*\))` \| `(?P<result>[^`]+)` "
                 r"\| (?P<does>[^|]+) \| (?P<errors>[^|]+) \|$")


def documented() -> list[dict[str, str]]:
    table = DBA.read_text().split(MARKER, 1)[1]
    rows = []
    for line in table.splitlines():
        if line.startswith("| `"):
            match = ROW.match(line)
            assert match, f"docs/dba.md: not a row of the SQL API table: {line[:120]}"
            rows.append({k: v.strip() for k, v in match.groupdict().items()})
    return rows


def catalog(conn) -> dict[str, str]:
    conn.execute("SET search_path = pg_catalog")  # types outside pg_catalog come out schema-qualified
    return {
        f"{name}({args})": result
        for name, args, result in conn.execute(
            "SELECT p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid)"
            " FROM pg_proc p WHERE p.pronamespace = 'passthrough'::regnamespace AND p.proname !~ '^_'"
        ).fetchall()
    }


def test_the_sql_api_table_lists_every_public_function_exactly(conn):
    rows = documented()
    in_docs = {r["signature"]: r["result"] for r in rows}
    assert len(in_docs) == len(rows), "a function is listed twice"
    in_db = catalog(conn)
    missing = sorted(set(in_db) - set(in_docs))
    stale = sorted(set(in_docs) - set(in_db))
    assert not missing and not stale, (
        "docs/dba.md, SQL API: add a row for each missing function and remove or fix the stale rows "
        "(arguments as pg_get_function_arguments prints them)\n"
        + "".join(f"  missing: passthrough.{s} -> {in_db[s]}\n" for s in missing)
        + "".join(f"  stale:   passthrough.{s}\n" for s in stale))
    wrong = {s: (in_docs[s], in_db[s]) for s in in_db if in_docs[s] != in_db[s]}
    assert not wrong, f"docs/dba.md, SQL API: results differ (docs, catalog): {wrong}"


def test_every_row_says_what_it_does_and_its_errors_are_defined():
    defined = set(re.findall(r"^\| (PT\d{3}) \|", ERRORS.read_text(), re.M))
    assert defined, "docs/errors.md has no SQLSTATE table"
    for row in documented():
        assert len(row["does"]) >= 20, row
        codes = re.findall(r"PT\d{3}", row["errors"])
        assert codes or row["errors"] == "-", f"errors: a list of PTnnn, or - for none: {row}"
        assert set(codes) <= defined, f"{row['signature']}: {set(codes) - defined} not in docs/errors.md"


def test_the_table_parser_reads_a_row():
    line = ("| `passthrough.f(p_a text DEFAULT 'x'::text)` | `TABLE(a text, b integer)` "
            "| Does something useful. | PT001, PT002 |")
    assert ROW.match(line).groupdict() == {
        "signature": "f(p_a text DEFAULT 'x'::text)", "result": "TABLE(a text, b integer)",
        "does": "Does something useful.", "errors": "PT001, PT002"}
