"""SQL injection: impossible by construction, and tested.

By construction (checked statically, so new code cannot slip by):
* Python sends every value as a bound parameter: the SQL text given to ``execute``/``copy`` is a literal, a
  module constant, or an f-string of module constants only (the few exceptions are listed with a reason);
* SQL builds dynamic statements only with ``format()`` and quoted placeholders (%I identifiers, %L literals).

Tested: classic injection strings sent through every string that reaches SQL (identifier values,
identifier type names, audience ids, idempotence ids, sources, segment ids, external ids, descriptions,
metadata keys and values, GraphQL arguments as variables and as literals, cursors, API keys, key names,
role names, snapshot and bulk rows) are stored and read back exactly as sent, or refused with a reason,
and the schema, the API keys and a canary table are untouched.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from http_helpers import json_headers
from sqlhelpers import event, stored_counts

from pyapp.ingest.staging import StagedRow, format_row, load_rows
from pyapp.ingest.snapshot import import_rows
from pyapp.web.graphql.schema import encode_cursor

pytest_plugins = ["http_fixtures"]

ROOT = Path(__file__).resolve().parent.parent

PAYLOADS = [
    "'; DROP TABLE passthrough.memberships; --",
    "' OR '1'='1",
    '"; DROP TABLE passthrough.audiences; --',
    "x'); SELECT pg_sleep(5); --",
    "$$; DROP SCHEMA passthrough CASCADE; $$",
    "\\'; DELETE FROM passthrough.api_keys; --",
    "%s%s%(x)s{0}%I%L",
    "1; UPDATE passthrough.settings SET passthrough_enabled = false",
    "\u02bc; DROP TABLE passthrough.events; --",
    "'||(SELECT string_agg(key_hash::text, ',') FROM passthrough.api_keys)||'",
    "passthrough.memberships",
    "*/ SELECT 1; /*",
]
IDS = [f"p{i}" for i in range(len(PAYLOADS))]


# --------------------------------------------------------------------------- by construction: Python

# (file, the SQL argument's source text): why it is safe
ALLOWED_DYNAMIC_SQL = {
    ("pyapp/cli/common.py", "sql"): "run_sql(args, sql, params): its callers pass a literal and parameters",
    ("pyapp/web/graphql/context.py", "statement"): "Context.fetchall(sql, params)'s sql (callers pass the module constants "
                                           "*_SQL), or auth.GATE_SQL wrapped around it",
    ("pyapp/web/segments.py", "save_sql"): "CREATE_SQL or PUT_SQL, module constants",
    ("pyapp/migrate.py", "migration.sql"): "the packaged migration files, checked by SHA-256",
    ("pyapp/workers/upkeep.py", "sql"): "_call(conn, sql, arg): callers pass a literal and the chunk size as a parameter",
}


def sql_arguments():
    """(file, line, source of the SQL argument, is it safe by form) for every .execute(...)/.copy(...)."""
    for path in sorted((ROOT / "pyapp").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("execute", "copy", "executemany") and node.args):
                arg = node.args[0]
                yield rel, node.lineno, ast.get_source_segment(path.read_text(), arg), safe_form(arg)


def safe_form(arg: ast.expr) -> bool:
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return True
    if isinstance(arg, ast.Name) and arg.id.isupper():
        return True  # a module constant
    if isinstance(arg, ast.JoinedStr):  # an f-string of module constants only
        return all(isinstance(v.value, ast.Name) and v.value.id.isupper()
                   for v in arg.values if isinstance(v, ast.FormattedValue))
    if (isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute) and arg.func.attr == "format"
            and isinstance(arg.func.value, ast.Call) and ast.unparse(arg.func.value.func) == "sql.SQL"
            and all(isinstance(a, ast.Constant) for a in arg.func.value.args)):
        # psycopg.sql composition: every value goes through sql.Identifier or sql.Literal, which quote it
        return all(isinstance(a, ast.Call) and ast.unparse(a.func) in ("sql.Identifier", "sql.Literal")
                   for a in [*arg.args, *(k.value for k in arg.keywords)])
    if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Add):
        return safe_form(arg.left) and safe_form(arg.right)
    return False


def test_python_sends_values_only_as_parameters():
    found = list(sql_arguments())
    assert len(found) > 20
    unsafe = [(f, line, src) for f, line, src, safe in found if not safe and (f, src) not in ALLOWED_DYNAMIC_SQL]
    assert not unsafe, ("SQL text built from something other than constants; pass values as parameters "
                        f"(or, if it is truly constant, add it to ALLOWED_DYNAMIC_SQL with the reason): {unsafe}")
    used = {(f, src) for f, _, src, safe in found if not safe}
    assert set(ALLOWED_DYNAMIC_SQL) <= used | {k for k in ALLOWED_DYNAMIC_SQL if not (ROOT / k[0]).exists()}, (
        f"stale ALLOWED_DYNAMIC_SQL entries: {set(ALLOWED_DYNAMIC_SQL) - used}")


def test_the_static_check_catches_interpolation():
    assert not safe_form(ast.parse('f"SELECT {value}"', mode="eval").body)
    assert not safe_form(ast.parse('"SELECT %s" % value', mode="eval").body)
    assert not safe_form(ast.parse('"SELECT " + value', mode="eval").body)
    assert not safe_form(ast.parse('"SELECT {}".format(value)', mode="eval").body)
    assert not safe_form(ast.parse('sql.SQL("DROP DATABASE {}").format(sql.SQL(name))', mode="eval").body)
    assert safe_form(ast.parse('f"SELECT * FROM {LEDGER_SCHEMA}.applied"', mode="eval").body)
    assert safe_form(ast.parse('sql.SQL("DROP DATABASE {}").format(sql.Identifier(name))', mode="eval").body)


# --------------------------------------------------------------------------- by construction: SQL

# %s in a format() for EXECUTE is allowed only for a regprocedure (its text output quotes every name)
ALLOWED_PERCENT_S = {("280_roles.sql", "GRANT EXECUTE ON FUNCTION %s TO %I")}


def test_sql_builds_dynamic_statements_only_with_quoting_placeholders():
    checked = 0
    for path in sorted((ROOT / "sql").rglob("*.sql")):
        code = re.sub(r"--[^\n]*", "", path.read_text())
        for match in re.finditer(r"\bEXECUTE\s+(?!FUNCTION\b|PROCEDURE\b|ON\b)(\S[^;]*);", code, re.I):
            statement = match.group(1)
            assert statement.startswith("format("), f"{path.name}: EXECUTE of a string not built by format(): {statement[:80]}"
            template = re.match(r"format\('((?:[^']|'')*)'", statement).group(1)
            for placeholder in re.findall(r"%[^%ILs]|%s", template):
                assert (path.name, template) in ALLOWED_PERCENT_S, f"{path.name}: {placeholder} in {template!r}"
            checked += 1
    assert checked >= 1


# --------------------------------------------------------------------------- tested: every path


@pytest.fixture
def canary(enabled):
    enabled.execute("CREATE TABLE IF NOT EXISTS public.canary (x text); TRUNCATE public.canary;"
                    " INSERT INTO public.canary VALUES ('alive')")
    relations = enabled.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'passthrough'::regnamespace"
                                ).fetchone()[0]
    yield enabled
    assert enabled.execute("SELECT x FROM public.canary").fetchall() == [("alive",)]
    assert enabled.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'passthrough'::regnamespace"
                           ).fetchone()[0] == relations
    assert enabled.execute("SELECT passthrough.is_enabled()").fetchone() == (True,)
    enabled.execute("DROP TABLE public.canary")


@pytest.mark.parametrize("payload", PAYLOADS, ids=IDS)
def test_events_and_graphql_keep_every_string_as_data(client, canary, public_key, private_key, payload):
    keys = canary.execute("SELECT count(*) FROM passthrough.api_keys").fetchone()[0]
    audience = payload[:255]
    body = [event(identifiers={"fs_user_id": payload}, data_audience_id=audience, data_idempotence_id=payload)]
    response = client.post("/v3/events", headers=json_headers(private_key), json=body)
    assert response.status_code == 202, response.text
    assert canary.execute(
        "SELECT m.identifier, x.external_id, e.idempotence_id FROM passthrough.memberships m"
        " JOIN passthrough.external_audiences x ON x.id = m.audience_key"
        " JOIN passthrough.events e ON e.identifier = m.identifier AND e.audience_key = m.audience_key").fetchall() == [
        (payload, audience, payload)]
    # an identifier type name is never more than a name: refused, and named back as JSON
    bad = client.post("/v3/events", headers=json_headers(private_key),
                      json=[event(identifiers={payload: "u"})])
    assert bad.status_code == 400
    assert json.dumps(payload.lower().replace("-", "_"))[:40] in bad.json()["detail"]["invalids"][0]["message"] or (
        "identifiers" in bad.json()["detail"]["invalids"][0]["message"])
    # segments: a name is checked by its rule; every other field is stored as sent
    refused = client.put("/v3/segments/" + quote(payload, safe=""), headers=json_headers(private_key),
                         json={"definition": {"external": {"external_audience_id": audience}}})
    assert refused.status_code in (400, 404) and refused.json()["detail"]["code"] in ("invalid_audience", "not_found")
    saved = client.put("/v3/segments/seg_inj", headers=json_headers(private_key), json={
        "definition": {"external": {"external_audience_id": audience}}, "description": payload,
        "metadata": {payload: payload}})
    assert saved.status_code == 200, saved.text
    got = client.get("/v3/segments/seg_inj", headers={"x-api-key": private_key}).json()
    assert (got["description"], got["metadata"], got["definition"]["external"]["external_audience_id"], got["size"]) == (
        payload, {payload: payload}, audience, 1)
    # GraphQL, as the Python SDK sends it (variables) and as the JavaScript SDK does (literals pasted in)
    query = ("query($u: String, $a: [String]) {customer(fs_user_id: $u) {audiences(subset: $a)"
             " {edges {node {name state}}}}}")
    answer = client.post("/v3/graphql", headers=json_headers(public_key),
                         json={"query": query, "variables": {"u": payload, "a": ["seg_inj", payload]}}).json()
    assert answer == {"data": {"customer": {"audiences": {"edges": [
        {"node": {"name": "seg_inj", "state": "qualified"}}]}}}}
    literal = "query {customer(fs_user_id: %s) {audiences(subset: [\"seg_inj\", %s]) {edges {node {name}}}}}" % (
        json.dumps(payload), json.dumps(payload))
    answer = client.post("/v3/graphql", headers=json_headers(public_key), json={"query": literal}).json()
    assert answer == {"data": {"customer": {"audiences": {"edges": [{"node": {"name": "seg_inj"}}]}}}}
    paged = client.post("/v3/graphql", headers=json_headers(public_key), json={
        "query": "query($c: String) {audiences(after: $c) {edges {node {name}}}}",
        "variables": {"c": encode_cursor(payload)}})
    assert paged.status_code == 200 and "errors" not in paged.json()
    # an API key is only ever hashed
    assert client.get("/v3/segments", headers={"x-api-key": payload.encode()}).status_code == 401
    assert canary.execute("SELECT count(*) FROM passthrough.api_keys").fetchone()[0] == keys


@pytest.mark.parametrize("payload", PAYLOADS, ids=IDS)
def test_sql_functions_keep_every_string_as_data(canary, http_database_url, payload):
    conn = canary
    audience = payload[:255]
    conn.execute("SELECT passthrough.apply_event('fs_user_id', %s, %s, 'qualify', 1700000000, %s, %s)",
                 (payload, audience, payload, payload))
    assert conn.execute("SELECT source FROM passthrough.batches").fetchall() == [(payload,)]
    conn.execute("SELECT passthrough.put_audience('seg_sql', %s, %s, %s)", (audience, payload, json.dumps({payload: 1})))
    assert conn.execute("SELECT name, size FROM passthrough.customer_audiences('fs_user_id', %s, ARRAY[%s, 'seg_sql'])",
                        (payload, payload)).fetchall() == [("seg_sql", 1)]
    # names with a rule are refused with the rule, whatever they hold
    for call, args, sqlstate in [
        ("SELECT passthrough.add_identifier_type(%s)", (payload,), "PT010"),
        *([] if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", payload) else [  # else a fine key name
            ("SELECT passthrough.create_api_key(%s, 'public')", (payload,), "PT010")]),
        ("SELECT passthrough.create_api_key('k', %s)", (payload,), "PT010"),
        ("SELECT passthrough.revoke_api_key(%s)", (payload,), "PT012"),
        ("SELECT passthrough.get_audience(%s)", (payload,), "PT006"),
        ("SELECT passthrough.delete_audience(%s)", (payload,), "PT006"),
        ("SELECT passthrough.remove_identifier_type(%s)", (payload,), "PT008"),
        ("SELECT * FROM passthrough.create_roles(%s, 'pt_inj_reader')", (payload,), "PT010"),
        ("SELECT * FROM passthrough.customer_audiences(%s, 'u')", (payload,), "PT003"),
        ("SELECT passthrough.create_audience(%s, 'x')", (payload,), "PT007"),
    ]:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(call, args)
        assert caught.value.sqlstate == sqlstate, (call, caught.value)
    # the bulk path and snapshot imports: rows arrive by COPY, as data
    with psycopg.connect(http_database_url) as bulk:
        rows = [StagedRow(type="passthrough", action="qualify", identifier_type="fs_user_id", identifier=payload + "!",
                          audience_id=audience, ts="1700000001", idempotence_id=payload)]
        assert load_rows(bulk, "".join(format_row(1, r) for r in rows).encode(), source=payload).accepted == 1
        bulk.commit()
        snapshot = import_rows(bulk, format_row(1, StagedRow(
            type="passthrough", action="qualify", identifier_type="fs_user_id", identifier=payload + "?",
            audience_id=audience, ts="1700000002")).encode(), audience, force=True)
        bulk.commit()
        assert snapshot.applied
    assert set(conn.execute(
        "SELECT m.identifier, m.qualified FROM passthrough.memberships m").fetchall()) == {
        (payload, False), (payload + "!", False), (payload + "?", True)}
    # events: 1 + 1 loaded + the snapshot's listed row (who it leaves out is its verdict, not an event)
    assert stored_counts(conn)[1] == 3
    assert conn.execute("SELECT m.identifier FROM passthrough.snapshot_members m").fetchall() == [(payload + "?",)]
