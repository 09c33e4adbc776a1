"""The SQL interface tests a DBA reads (tests/sql/README.md): each tests/sql/input/NAME.sql runs in psql
against a fresh migrated database, and what psql prints must equal tests/sql/expected/NAME.out.

PASSTHROUGH_REGRESS_ACCEPT=1 writes the expected files from what psql printed instead; read the diff
before committing it, since the expected files are the specification.
"""

from __future__ import annotations

import difflib
import os
import subprocess
from pathlib import Path

import psycopg
import pytest

SUITE = Path(__file__).resolve().parent / "sql"
INPUTS = sorted((SUITE / "input").glob("*.sql"))
ACCEPT = os.environ.get("PASSTHROUGH_REGRESS_ACCEPT") == "1"


@pytest.fixture(scope="module")
def psql(pg_server_url: str) -> str:
    """The running server's own psql (the embedded server ships one; so does every PostgreSQL install)."""
    with psycopg.connect(pg_server_url) as c:
        (bindir,) = c.execute("SELECT setting FROM pg_catalog.pg_config WHERE name = 'BINDIR'").fetchone()
    path = Path(bindir) / "psql"
    assert path.is_file(), f"the test server's psql is not at {path}"
    return str(path)


def run_psql(psql: str, db_url: str, script: Path) -> str:
    # As pg_regress runs it: input on stdin (so errors carry no file:line prefix), every line echoed (-a),
    # no ~/.psqlrc (-X), errors and results in one stream, in the order psql wrote them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGTZ="UTC", PGDATESTYLE="ISO, MDY", PGCLIENTENCODING="UTF8", LC_ALL="C", LANG="C")
    with script.open("rb") as stdin:
        proc = subprocess.run([psql, "-X", "-a", "-q", "-d", db_url], stdin=stdin, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout.decode()
    return proc.stdout.decode()


def test_there_are_inputs_and_each_has_its_expected_output():
    assert INPUTS
    expected = sorted(p.stem for p in (SUITE / "expected").glob("*.out"))
    assert expected == [p.stem for p in INPUTS] or ACCEPT, "every input needs expected/NAME.out and nothing else"


@pytest.mark.parametrize("script", INPUTS, ids=[p.stem for p in INPUTS])
def test_sql_interface(script: Path, psql: str, db_url: str):
    got = run_psql(psql, db_url, script)
    expected_path = SUITE / "expected" / f"{script.stem}.out"
    if ACCEPT:
        expected_path.write_text(got)
        return
    assert expected_path.is_file(), f"no {expected_path}: run with PASSTHROUGH_REGRESS_ACCEPT=1 and read it"
    want = expected_path.read_text()
    diff = "".join(difflib.unified_diff(want.splitlines(keepends=True), got.splitlines(keepends=True),
                                        f"expected/{script.stem}.out", "psql printed"))
    assert got == want, f"{script.name}: psql's output differs from the expected file\n{diff}"
