"""Least privilege in the database: the roles passthrough.create_roles() makes, proven by connecting as each.

* the catalog: every SECURITY DEFINER function pins search_path, nothing is executable by PUBLIC, no role
  but the owner holds any privilege on any table or sequence (checked over pg_proc / pg_class, so a new
  function or table cannot slip by);
* the writer may run the loading and apply functions (the bulk path included: staging table, COPY,
  load_staged, import_snapshot) and nothing else; the reader may run the read functions and nothing else
  (both lists written out below, by signature); a role with no grant may run nothing; none of them may
  touch a table;
* a caller cannot plant its own pg_temp staging table (with a trigger, or as a view) to run code with the
  owner's rights.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from pgcluster import create_database, drop_database
from psycopg import sql

from pyapp import cli
from pyapp.ingest.staging import StagedRow, format_row, load_rows
from pyapp.ingest.snapshot import import_rows, snapshot_diff

TS = 1_700_000_000
PINNED = "search_path=pg_catalog, pg_temp"


def pins_search_path(config: list[str] | None) -> bool:
    """SET search_path = pg_catalog, pg_temp among the function's settings (work_mem etc. may follow)."""
    return [c for c in config or () if c.startswith("search_path=")] == [PINNED]
TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER"


def url_as(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment))


@dataclass
class Roles:
    url: str  # the owner's (the superuser the suite runs as)
    writer: str  # the NOLOGIN roles create_roles made
    reader: str
    writer_url: str  # login roles that are members of them
    reader_url: str
    nobody_url: str  # a login role with no grant at all


@pytest.fixture(scope="module")
def roles(pg_server_url: str, migrated_template: str) -> Iterator[Roles]:
    tag = uuid.uuid4().hex[:10]
    name = f"test_roles_{tag}"
    writer, reader = f"pt_writer_{tag}", f"pt_reader_{tag}"
    logins = {"writer": f"pt_writer_login_{tag}", "reader": f"pt_reader_login_{tag}", "nobody": f"pt_nobody_{tag}"}
    url = create_database(pg_server_url, name, template=migrated_template)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT * FROM passthrough.create_roles(%s, %s)", (writer, reader))
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                sql.Identifier(logins["writer"]), sql.Identifier(writer)))
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                sql.Identifier(logins["reader"]), sql.Identifier(reader)))
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(logins["nobody"])))
            conn.execute("SELECT passthrough.enable()")
        yield Roles(url, writer, reader, url_as(url, logins["writer"]), url_as(url, logins["reader"]),
                    url_as(url, logins["nobody"]))
    finally:
        drop_database(pg_server_url, name)
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            for role in [*logins.values(), writer, reader]:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


# What each role may execute, written out (not read from passthrough._role_functions(), the list under test):
# the writer loads, applies and runs the upkeep `passthrough serve` does; the reader reads. Neither may read or
# write any table, view or sequence.
WRITER_FUNCTIONS = {
    "passthrough.apply_event(text,text,text,text,numeric,text,text)",
    "passthrough.apply_events(jsonb,text,boolean,text)",
    "passthrough.begin_load()",
    "passthrough.expire_memberships(integer)",
    "passthrough.get_load_rejects(bigint)",
    "passthrough.import_snapshot(text,numeric,numeric,boolean,boolean,text)",
    "passthrough.is_enabled()",
    "passthrough.load_staged(text,boolean,boolean)",
    "passthrough.prune_history(integer)",
    "passthrough.register_staged_audiences()",
    "passthrough.snapshot_diff(integer)",
}
READER_FUNCTIONS = {
    "passthrough.audience_member_counts(text,timestamp with time zone)",
    "passthrough.audience_member_lines(text,text,timestamp with time zone,text,integer,text)",
    "passthrough.audience_members(text,timestamp with time zone,text,integer)",
    "passthrough.audience_size_at(text,timestamp with time zone)",
    "passthrough.audience_size_history(text,timestamp with time zone,timestamp with time zone,text)",
    "passthrough.changes(text,integer)",
    "passthrough.changes_pending()",
    "passthrough.audience_page_info(integer,text)",
    "passthrough.audience_recent_changes(text,integer)",
    "passthrough.current_change_cursor()",
    "passthrough.customer_audiences(text,text,text[])",
    "passthrough.customer_audiences_at(text,text,text[],timestamp with time zone,boolean)",
    "passthrough.get_audience(text)",
    "passthrough.get_settings()",
    "passthrough.is_enabled()",
    "passthrough.instant_from_seconds(numeric,text)",
    "passthrough.list_audiences(integer,text)",
    "passthrough.list_identifier_types()",
    "passthrough.membership_history(text,text,text)",
    "passthrough.service_metrics()",
}
FUNCTIONS = {"writer": WRITER_FUNCTIONS, "reader": READER_FUNCTIONS, "nobody": set()}


def executable_beyond_public(conn, role: str) -> set[str]:
    """Every function in the database (any schema) the role may execute that PUBLIC may not, as regprocedure
    text (PUBLIC keeps PostgreSQL's default EXECUTE on pg_catalog's functions)."""
    return {sig for (sig,) in conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE has_function_privilege(%s, p.oid, 'EXECUTE')"
        " AND NOT has_function_privilege('public', p.oid, 'EXECUTE')", (role,)).fetchall()}


def all_functions(conn) -> dict[str, str]:
    """regprocedure text -> a call with NULL arguments of the right types."""
    conn.execute("SET search_path = pg_catalog")
    found = {}
    for signature, name, types in conn.execute(
        "SELECT p.oid::regprocedure::text, p.proname,"
        " ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes::oid[]) t)"
        " FROM pg_proc p WHERE p.pronamespace = 'passthrough'::regnamespace AND p.prokind = 'f'"
        " AND p.prorettype <> 'trigger'::regtype"
    ).fetchall():
        args = ", ".join(f"NULL::{t}" for t in types)
        found[signature] = f"SELECT passthrough.{name}({args})"
    conn.execute("RESET search_path")
    return found


def relations(conn) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT c.oid::regclass::text FROM pg_class c WHERE c.relnamespace = 'passthrough'::regnamespace"
        " AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') ORDER BY 1").fetchall()]


def sqlstate_of(conn, statement: str, params=()) -> str | None:
    try:
        with conn.transaction():
            conn.execute(statement, params)
    except psycopg.Error as exc:
        return exc.sqlstate
    return None


# --------------------------------------------------------------------------- the catalog


def test_every_security_definer_function_pins_its_search_path(conn):
    found = conn.execute(
        "SELECT p.oid::regprocedure::text, p.proname, p.prosecdef, p.proconfig,"
        " obj_description(p.oid, 'pg_proc') IS NOT NULL"
        " FROM pg_proc p WHERE p.pronamespace = 'passthrough'::regnamespace").fetchall()
    assert len(found) > 30
    for signature, name, secdef, config, commented in found:
        if secdef:
            assert pins_search_path(config), f"{signature} is SECURITY DEFINER without SET search_path = pg_catalog, pg_temp"
        if not name.startswith("_"):
            assert commented, f"{signature}: COMMENT ON FUNCTION missing"
            # every API function runs with the owner's rights, so a caller needs no right on a table;
            # create_roles is the one exception: it must run with its caller's rights (CREATE ROLE)
            assert secdef == (name != "create_roles"), signature
            assert pins_search_path(config), signature


def test_public_may_execute_nothing_and_touch_nothing(conn):
    public_functions = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'passthrough'::regnamespace"
        " AND has_function_privilege('public', p.oid, 'EXECUTE')").fetchall()
    assert public_functions == []
    public_relations = conn.execute(
        "SELECT c.oid::regclass::text FROM pg_class c, aclexplode(c.relacl) a"
        " WHERE c.relnamespace = 'passthrough'::regnamespace AND a.grantee = 0").fetchall()
    assert public_relations == []
    assert conn.execute("SELECT has_schema_privilege('public', 'passthrough', 'USAGE')").fetchone() == (False,)


def test_no_role_but_the_owner_holds_a_privilege_on_any_table_or_sequence(roles):
    with psycopg.connect(roles.url, autocommit=True) as conn:
        grants = conn.execute(
            "SELECT c.oid::regclass::text, a.grantee::regrole::text, a.privilege_type"
            " FROM pg_class c, aclexplode(c.relacl) a"
            " WHERE c.relnamespace = 'passthrough'::regnamespace AND a.grantee <> c.relowner").fetchall()
        assert grants == []
        for role in (roles.writer, roles.reader):
            for rel in relations(conn):
                kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", (rel,)).fetchone()[0]
                check = ("has_sequence_privilege(%s, %s, 'USAGE, SELECT, UPDATE')" if kind == "S"
                         else f"has_table_privilege(%s, %s, '{TABLE_PRIVILEGES}')")
                assert conn.execute(f"SELECT {check}", (role, rel)).fetchone() == (False,), (role, rel)


def test_create_roles_grants_exactly_the_functions_written_out(roles):
    with psycopg.connect(roles.url, autocommit=True) as conn:
        for role, kind in ((roles.writer, "writer"), (roles.reader, "reader")):
            assert executable_beyond_public(conn, role) == FUNCTIONS[kind], role
            # the same from the SQL standard's view, by grant rather than by effective right
            routines = {(name, schema) for name, schema in conn.execute(
                "SELECT routine_name, routine_schema FROM information_schema.role_routine_grants"
                " WHERE grantee = %s AND privilege_type = 'EXECUTE'", (role,)).fetchall()}
            assert routines == {(f.removeprefix("passthrough.").partition("(")[0], "passthrough")
                                for f in FUNCTIONS[kind]}, role
            # no table, view or sequence, in any schema, beyond what PUBLIC has
            assert conn.execute("SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = %s",
                                (role,)).fetchone() == (0,), role
            assert conn.execute(
                "SELECT c.oid::regclass::text FROM pg_class c WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')"
                f" AND has_table_privilege(%s, c.oid, '{TABLE_PRIVILEGES}')"
                f" AND NOT has_table_privilege('public', c.oid, '{TABLE_PRIVILEGES}')", (role,)).fetchall() == [], role
            assert conn.execute(
                "SELECT c.oid::regclass::text FROM pg_class c WHERE CASE WHEN c.relkind = 'S' THEN"  # CASE: in order
                " has_sequence_privilege(%s, c.oid, 'USAGE, SELECT, UPDATE')"
                " AND NOT has_sequence_privilege('public', c.oid, 'USAGE, SELECT, UPDATE') END", (role,)
            ).fetchall() == [], role
            assert conn.execute("SELECT has_schema_privilege(%s, 'passthrough', 'USAGE'),"
                                " has_schema_privilege(%s, 'passthrough', 'CREATE')", (role, role)).fetchone() == (
                True, False)
        # what create_roles returns is the catalog's truth
        again = conn.execute("SELECT role, function_name FROM passthrough.create_roles(%s, %s)",
                             (roles.writer, roles.reader)).fetchall()
        assert set(again) == ({(roles.writer, f) for f in WRITER_FUNCTIONS}
                              | {(roles.reader, f) for f in READER_FUNCTIONS})


def test_a_role_with_no_grant_may_execute_nothing_beyond_public(roles):
    login = urlsplit(roles.nobody_url).netloc.partition("@")[0]
    with psycopg.connect(roles.url, autocommit=True) as conn:
        assert executable_beyond_public(conn, login) == set()


# --------------------------------------------------------------------------- connecting as each role


@pytest.mark.parametrize("who", ["writer", "reader", "nobody"])
def test_each_role_can_execute_only_its_functions(roles, who):
    with psycopg.connect(roles.url, autocommit=True) as owner:
        calls = all_functions(owner)
        allowed = FUNCTIONS[who]
    url = {"writer": roles.writer_url, "reader": roles.reader_url, "nobody": roles.nobody_url}[who]
    with psycopg.connect(url, autocommit=True) as conn:
        for signature, call in calls.items():
            if signature not in allowed:
                assert sqlstate_of(conn, call) == "42501", f"{who} may call {signature}"
        assert len(calls) - len(allowed) > 20


@pytest.mark.parametrize("who", ["writer", "reader", "nobody"])
def test_no_role_can_touch_a_table(roles, who):
    with psycopg.connect(roles.url, autocommit=True) as owner:
        rels = relations(owner)
        kinds = dict(owner.execute(
            "SELECT oid::regclass::text, relkind FROM pg_class WHERE relnamespace = 'passthrough'::regnamespace"
        ).fetchall())
        first_columns = dict(owner.execute(
            "SELECT DISTINCT ON (attrelid) attrelid::regclass::text, attname FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid WHERE c.relnamespace = 'passthrough'::regnamespace"
            " AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity = '' ORDER BY attrelid, attnum").fetchall())
    url = {"writer": roles.writer_url, "reader": roles.reader_url, "nobody": roles.nobody_url}[who]
    with psycopg.connect(url, autocommit=True) as conn:
        for rel in rels:
            statements = ([f"SELECT nextval('{rel}')", f"SELECT * FROM {rel}"] if kinds[rel] == "S" else
                          [f"SELECT * FROM {rel} LIMIT 1"] if kinds[rel] == "v" else
                          [f"SELECT * FROM {rel} LIMIT 1", f"DELETE FROM {rel}", f"TRUNCATE {rel}",
                           f"INSERT INTO {rel} DEFAULT VALUES", f"UPDATE {rel} SET {first_columns[rel]} = {first_columns[rel]}"])
            for statement in statements:
                assert sqlstate_of(conn, statement) == "42501", f"{who}: {statement}"


def staged(rows: list[tuple[str, str, str]]) -> bytes:
    """(identifier, audience, action) rows as COPY text for the staging table."""
    return "".join(
        format_row(n, StagedRow(type="passthrough", action=action, identifier_type="fs_user_id", identifier=i,
                                audience_id=a, ts=str(TS + n)))
        for n, (i, a, action) in enumerate(rows, 1)).encode()


def test_the_writer_applies_events_and_loads_in_bulk(roles, tmp_path, capsys):
    with psycopg.connect(roles.writer_url, autocommit=True) as w:
        w.execute("""SELECT passthrough.apply_events('[{"type": "passthrough", "action": "qualify",
                     "identifiers": {"fs_user_id": "w1"}, "data": {"audience_id": "wa", "ts": 1700000000}}]')""")
        w.execute("SELECT passthrough.apply_event('fs_user_id', 'w2', 'wa', 'qualify', 1700000001)")
    # the bulk path: a staging table the owner creates for the session, COPY, load_staged, in one transaction
    with psycopg.connect(roles.writer_url) as w:
        result = load_rows(w, staged([("w3", "wa", "qualify"), ("w4", "wb", "qualify")]), source="etl")
        assert result.accepted == 2
        w.commit()
        rejected = load_rows(w, staged([("w5", "wb", "qualify"), ("", "wb", "qualify")]), rejects=True)
        w.commit()
        assert (rejected.accepted, rejected.rejected) == (1, 1)
        assert len(w.execute("SELECT * FROM passthrough.get_load_rejects(%s)", (rejected.load_id,)).fetchall()) == 1
        # a snapshot import and its diff
        snap = import_rows(w, staged([("w1", "wa", "qualify"), ("w9", "wa", "qualify")]), "wa", force=True)
        w.commit()
        assert snap.applied and snap.to_disqualify == 2 and snap.to_qualify == 1
        assert {row[0] for row in snapshot_diff(w)} == {"qualify", "disqualify"}
    # the command line loader, as the writer
    data = tmp_path / "events.ndjson"
    data.write_text('{"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "w6"},'
                    ' "data": {"audience_id": "wb", "ts": 1700000000}}\n')
    assert cli.main(["load", "--database-url", roles.writer_url, "--quiet", str(data)]) == 0
    with psycopg.connect(roles.url, autocommit=True) as owner:
        members = set(owner.execute(
            "SELECT m.identifier, x.external_id FROM passthrough.memberships m JOIN passthrough.external_audiences x"
            " ON x.id = m.audience_key WHERE m.qualified").fetchall())
    assert {("w1", "wa"), ("w9", "wa"), ("w4", "wb"), ("w5", "wb"), ("w6", "wb")} <= members
    assert ("w2", "wa") not in members and ("w3", "wa") not in members


def test_only_the_owner_records_batches_under_the_reserved_sources(roles):
    """expiry and snapshot batches are written by Passthrough itself; a writer may not forge one."""
    body = ('[{"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "s1"},'
            ' "data": {"audience_id": "sa", "ts": 1700000000}}]')
    with psycopg.connect(roles.writer_url, autocommit=True) as w:
        for source in ("expiry", "snapshot"):
            assert sqlstate_of(w, "SELECT passthrough.apply_events(%s::jsonb, %s)", (body, source)) == "PT010"
            assert sqlstate_of(w, "SELECT passthrough.apply_event('fs_user_id', 's1', 'sa', 'qualify', NULL, NULL,"
                                  " %s)", (source,)) == "PT010"
        with w.transaction():
            load_rows(w, staged([("s2", "sa", "qualify")]), source="crm-nightly")  # any other name is fine
        with pytest.raises(psycopg.Error) as refused, w.transaction():
            load_rows(w, staged([("s3", "sa", "qualify")]), source="expiry")
        assert refused.value.sqlstate == "PT010" and "reserved" in str(refused.value)
    with psycopg.connect(roles.url, autocommit=True) as owner:
        owner.execute("SELECT passthrough.apply_events(%s::jsonb, 'snapshot')", (body,))
        assert owner.execute("SELECT count(*) FROM passthrough.batches WHERE source IN ('expiry', 'snapshot')"
                             " AND event_count = 1").fetchone() == (1,)


def test_the_reader_reads(roles):
    with psycopg.connect(roles.url, autocommit=True) as owner:
        owner.execute("SELECT passthrough.put_audience('seg_r', 'ra')")
        owner.execute("SELECT passthrough.apply_event('fs_user_id', 'r1', 'ra', 'qualify', 1700000000)")
    with psycopg.connect(roles.reader_url, autocommit=True) as r:
        assert r.execute("SELECT name, size FROM passthrough.customer_audiences('fs_user_id', 'r1')").fetchall() == [
            ("seg_r", 1)]
        assert r.execute("SELECT size FROM passthrough.get_audience('seg_r')").fetchone() == (1,)
        assert ("seg_r",) in r.execute("SELECT name FROM passthrough.list_audiences()").fetchall()
        assert r.execute("SELECT count(*) > 0 FROM passthrough.list_identifier_types()").fetchone() == (True,)
        assert r.execute("SELECT passthrough_enabled FROM passthrough.get_settings()").fetchone() == (True,)
        assert r.execute("SELECT passthrough.is_enabled()").fetchone() == (True,)
        # the past and the change feed (feed consumers and reports)
        assert r.execute("SELECT name, state FROM passthrough.customer_audiences_at('fs_user_id', 'r1', NULL,"
                         " to_timestamp(1700000001))").fetchall() == [("seg_r", "qualified")]
        assert r.execute("SELECT count(*) FROM passthrough.membership_history('fs_user_id', 'r1', 'seg_r')"
                         ).fetchone() == (1,)
        assert r.execute("SELECT passthrough.audience_size_at('seg_r', to_timestamp(1700000001))").fetchone() == (1,)
        assert r.execute("SELECT sum(entered) FROM passthrough.audience_size_history('seg_r',"
                         " to_timestamp(1699999000), to_timestamp(1700001000))").fetchone() == (1,)
        feed = r.execute("SELECT change, identifier FROM passthrough.changes() WHERE audience = 'seg_r'").fetchall()
        assert feed == [("entered", "r1")]
        assert r.execute("SELECT passthrough.current_change_cursor() <> ''").fetchone() == (True,)
        assert r.execute("SELECT passthrough.changes_pending()").fetchone() == (False,)
        # the export
        assert r.execute("SELECT identifier_type, identifier FROM passthrough.audience_members('seg_r')"
                         ).fetchall() == [("fs_user_id", "r1")]
        assert r.execute("SELECT members, lines FROM passthrough.audience_member_lines('seg_r', 'csv')"
                         ).fetchall() == [(1, "fs_user_id,r1,1700000000\n")]


# --------------------------------------------------------------------------- planted staging tables


EVIL = """
CREATE FUNCTION pg_temp.evil() RETURNS boolean LANGUAGE plpgsql AS
  $$ BEGIN UPDATE passthrough.settings SET max_future_skew = interval '42 days'; RETURN true; END $$;
CREATE FUNCTION pg_temp.evil_trigger() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN PERFORM pg_temp.evil(); RETURN NULL; END $$;
"""
LOAD_COLUMNS = ("row_no bigint, type text, action text, identifier_type text, identifier text, audience_id text,"
                " ts numeric, idempotence_id text, identifier_count integer, transport_problems text[]")
TABLE_COLUMNS = {
    "passthrough_load": LOAD_COLUMNS,
    "passthrough_load_invalid": "load_id bigint, row_no bigint, problems text[], type text, action text,"
    " identifier_type text, identifier text, audience_id text, ts numeric, idempotence_id text, source text,"
    " rejected_at timestamptz",
    "passthrough_snapshot_rows": "row_no bigint, type_id smallint, identifier text, ts numeric, problems text[]",
    "passthrough_incoming": "t smallint, i text, a text, q boolean, ts timestamptz, idem text",
}
SNAPSHOT_DIFF_COLUMNS = ("change text, listed boolean, type_id smallint, identifier text, current_ts timestamptz,"
                         " snapshot_ts timestamptz")

# (the table planted, how: a table with a TRUNCATE trigger or a view calling evil(), the call that would use it)
PLANTS = [
    ("passthrough_load", "trigger", "SELECT passthrough.begin_load()"),
    ("passthrough_load", "view", "SELECT * FROM passthrough.load_staged()"),
    ("passthrough_load", "view", "SELECT passthrough.register_staged_audiences()"),
    ("passthrough_load", "view", "SELECT * FROM passthrough.import_snapshot('x', p_dry_run => true)"),
    ("passthrough_load_invalid", "trigger", "SELECT * FROM passthrough.load_staged()"),
    ("passthrough_snapshot_rows", "trigger", "SELECT * FROM passthrough.import_snapshot('x', p_dry_run => true)"),
    ("passthrough_snapshot_diff", "trigger", "SELECT * FROM passthrough.import_snapshot('x', p_dry_run => true)"),
    ("passthrough_snapshot_diff", "view", "SELECT * FROM passthrough.snapshot_diff()"),
    ("passthrough_incoming", "trigger", "SELECT * FROM passthrough.load_staged()"),
    ("passthrough_incoming", "view", "SELECT passthrough.apply_event('fs_user_id', 'u-1', 'aud-1', 'qualify')"),
]


@pytest.mark.parametrize("table, how, call", PLANTS, ids=[f"{t}-{h}-{c.split('(')[0].split('.')[-1]}" for t, h, c in PLANTS])
def test_a_planted_session_table_never_runs_with_the_owners_rights(roles, table, how, call):
    columns = TABLE_COLUMNS.get(table, SNAPSHOT_DIFF_COLUMNS)
    with psycopg.connect(roles.url, autocommit=True) as owner:
        owner.execute("SELECT passthrough.set_max_future_skew(interval '1 day')")
    with psycopg.connect(roles.writer_url, autocommit=True) as w:
        w.execute(EVIL)
        if table == "passthrough_load_invalid":  # reached only with a real staging table holding an invalid row
            w.execute("SELECT passthrough.begin_load()")
            w.execute("INSERT INTO pg_temp.passthrough_load (type) VALUES ('passthrough')")
        if table in ("passthrough_snapshot_rows", "passthrough_snapshot_diff") and "import_snapshot" in call \
                or "load_staged" in call and table == "passthrough_incoming":
            w.execute("SELECT passthrough.begin_load()")
        if how == "trigger":
            w.execute(f"CREATE TEMP TABLE {table} ({columns})")
            w.execute(f"CREATE TRIGGER evil BEFORE TRUNCATE ON pg_temp.{table}"
                      " FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.evil_trigger()")
        else:
            select = ", ".join(f"NULL::{c.split()[1]} AS {c.split()[0]}" for c in columns.split(", "))
            w.execute(f"CREATE TEMP VIEW {table} AS SELECT {select} WHERE pg_temp.evil()")
        w.execute(f"GRANT ALL ON pg_temp.{table} TO PUBLIC")  # so that the owner may use it
        state = sqlstate_of(w, call)
    with psycopg.connect(roles.url, autocommit=True) as owner:
        skew = owner.execute("SELECT max_future_skew FROM passthrough.get_settings()").fetchone()[0]
    assert skew.days == 1, f"{call} ran the caller's code with the owner's rights"
    assert state == "42501"


def test_the_planted_table_error_says_what_to_do(roles):
    with psycopg.connect(roles.writer_url, autocommit=True) as w:
        w.execute(f"CREATE TEMP TABLE passthrough_load ({LOAD_COLUMNS})")
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
            w.execute("SELECT passthrough.begin_load()")
        assert "was not created by Passthrough" in caught.value.diag.message_primary
        assert "DROP TABLE pg_temp.passthrough_load" in caught.value.diag.message_hint
        w.execute("DROP TABLE pg_temp.passthrough_load")
        assert w.execute("SELECT passthrough.begin_load()").fetchone() == ("pg_temp.passthrough_load",)


# --------------------------------------------------------------------------- create_roles itself


def test_create_roles_takes_back_extra_grants(roles):
    with psycopg.connect(roles.url, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION passthrough.enable() TO {w};"
                             " GRANT SELECT ON passthrough.memberships TO {w}").format(w=sql.Identifier(roles.writer)))
        assert conn.execute("SELECT has_table_privilege(%s, 'passthrough.memberships', 'SELECT')",
                            (roles.writer,)).fetchone() == (True,)
        conn.execute("SELECT * FROM passthrough.create_roles(%s, %s)", (roles.writer, roles.reader))
        assert conn.execute(
            "SELECT has_table_privilege(%s, 'passthrough.memberships', 'SELECT'),"
            " has_function_privilege(%s, 'passthrough.enable()', 'EXECUTE')",
            (roles.writer, roles.writer)).fetchone() == (False, False)


def test_only_the_owner_may_create_roles(roles):
    with psycopg.connect(roles.writer_url, autocommit=True) as w:
        assert sqlstate_of(w, "SELECT * FROM passthrough.create_roles()") == "42501"
    login = urlsplit(roles.nobody_url).netloc.partition("@")[0]
    with psycopg.connect(roles.url, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION passthrough.create_roles(text, text) TO {}").format(
            sql.Identifier(login)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA passthrough TO {}").format(sql.Identifier(login)))
    try:
        with psycopg.connect(roles.nobody_url, autocommit=True) as n:
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
                n.execute("SELECT * FROM passthrough.create_roles('pt_never_a', 'pt_never_b')")
            assert "only the owner of Passthrough" in caught.value.diag.message_primary
    finally:
        with psycopg.connect(roles.url, autocommit=True) as conn:
            conn.execute(sql.SQL("REVOKE ALL ON FUNCTION passthrough.create_roles(text, text) FROM {0};"
                                 " REVOKE ALL ON SCHEMA passthrough FROM {0}").format(sql.Identifier(login)))


@pytest.mark.parametrize("writer, reader", [
    ("Bad-Name", "pt_ok_reader"), (None, "pt_ok_reader"), ("pt_same", "pt_same"), ("postgres", "pt_ok_reader"),
    ("pt_ok_writer", "x" * 64),
])
def test_create_roles_refuses_bad_names_and_privileged_roles(conn, writer, reader):
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT * FROM passthrough.create_roles(%s, %s)", (writer, reader))
    assert caught.value.sqlstate == "PT010"
    assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'pt_ok_%'").fetchone() == (0,)


def test_the_default_names_and_the_cli(pg_server_url, db_url, capsys):
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        existed = {r for (r,) in admin.execute(
            "SELECT rolname FROM pg_roles WHERE rolname IN ('passthrough_writer', 'passthrough_reader')").fetchall()}
    try:
        assert cli.main(["roles", "create", "--database-url", db_url]) == 0
        out = capsys.readouterr().out
        assert "passthrough_writer" in out and "passthrough.load_staged(" in out
        assert "GRANT passthrough_writer TO" in out
        with psycopg.connect(db_url, autocommit=True) as conn:
            assert conn.execute(
                "SELECT has_function_privilege('passthrough_writer', 'passthrough.apply_events(jsonb, text, boolean, text)',"
                " 'EXECUTE'), has_function_privilege('passthrough_reader', "
                " 'passthrough.customer_audiences(text, text, text[])', 'EXECUTE'),"
                " has_function_privilege('passthrough_reader', 'passthrough.apply_events(jsonb, text, boolean, text)',"
                " 'EXECUTE'), (SELECT rolcanlogin FROM pg_roles WHERE rolname = 'passthrough_writer')"
            ).fetchone() == (True, True, False, False)
    finally:
        created = {"passthrough_writer", "passthrough_reader"} - existed
        with psycopg.connect(db_url, autocommit=True) as conn:
            for role in created:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(pg_server_url, autocommit=True) as admin:
            for role in created:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
