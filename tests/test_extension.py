"""Passthrough as a PostgreSQL extension.

The same generated script (pyapp/sql/passthrough--<version>.sql) installs through CREATE EXTENSION and
through the packaged migrator. These tests install the extension files into the test server's own
sharedir (the fixture below; `make install-extension` is tested into a DESTDIR), then prove:

* CREATE EXTENSION, the migrator, and CREATE EXTENSION of the oldest version followed by
  ALTER EXTENSION UPDATE step by step give the same schema: a catalog snapshot of every user object
  (tables, columns, types, constraints, indexes, triggers, sequences, functions with their bodies and
  settings, ACLs, comments), ignoring only the migrator's passthrough_migrations schema and extension
  membership;
* every table and sequence is registered with pg_extension_config_dump, and pg_dump / pg_restore (the
  server's own binaries) round-trip a database with Passthrough data, for both kinds of install;
* DROP EXTENSION removes everything but the schema, as docs/dba.md says;
* released install scripts stay frozen and upgrade scripts are shipped.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from http_helpers import TEST_CONFIG, make_client
from psycopg import sql

from pyapp import migrate
from pyapp.db import connect

ROOT = Path(__file__).resolve().parent.parent
CONTROL = ROOT / "sql" / "passthrough.control"
PACKAGED = ROOT / "pyapp" / "sql"
RELEASED = ROOT / "sql" / "released.sha256"
DEFAULT_VERSION = re.search(r"^\s*default_version\s*=\s*'([^']+)'", CONTROL.read_text(), re.M).group(1)


def extension_files() -> dict[str, bytes]:
    """What `make install-extension` installs: the control file and every packaged script."""
    files = {CONTROL.name: CONTROL.read_bytes()}
    files.update((p.name, p.read_bytes()) for p in sorted(PACKAGED.glob("passthrough--*.sql")))
    return files


# --------------------------------------------------------------------------- the server's files


@pytest.fixture(scope="module")
def server_config(pg_server_url: str) -> dict[str, str]:
    """The running server's own pg_config (SHAREDIR, BINDIR, ...): where it looks for extensions."""
    with psycopg.connect(pg_server_url) as c:
        return dict(c.execute("SELECT name, setting FROM pg_catalog.pg_config").fetchall())


@pytest.fixture(scope="module")
def extension_installed(server_config: dict[str, str]) -> Path:
    """Installs the extension files into the test server's sharedir, as `make install-extension` does.

    Each file is written next to its destination and renamed into place, so a concurrent test run never
    reads half a file; files already identical are left alone, and passthrough scripts the package no
    longer ships are removed (they would add versions and update paths)."""
    directory = Path(server_config["SHAREDIR"]) / "extension"
    wanted = extension_files()
    stale = [p for p in directory.glob("passthrough--*.sql") if p.name not in wanted]
    changed = {name: data for name, data in wanted.items()
               if not (directory / name).is_file() or (directory / name).read_bytes() != data}
    if changed or stale:
        if not os.access(directory, os.W_OK):
            raise PermissionError(
                f"the test server reads extensions from {directory}, which this user cannot write: run "
                f"`make install-extension PG_CONFIG={server_config['BINDIR']}/pg_config` as a user who can"
            )
        for name, data in changed.items():
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, directory / name)
        for path in stale:
            path.unlink(missing_ok=True)
    return directory


def tool(server_config: dict[str, str], name: str) -> str:
    path = Path(server_config["BINDIR"]) / name
    assert path.is_file(), f"the test server's {name} is not at {path}"
    return str(path)


def run(*argv: str) -> subprocess.CompletedProcess:
    # not the make flags of a `make test` that may have started this run (jobserver, overrides)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


# --------------------------------------------------------------------------- installs


def install_extension(url: str, version: str | None = None) -> None:
    with connect(url, autocommit=True) as c:
        if version is None:
            c.execute("CREATE EXTENSION passthrough")
        else:
            c.execute(sql.SQL("CREATE EXTENSION passthrough VERSION {}").format(sql.Literal(version)))


def install_migrator(url: str) -> None:
    with connect(url) as c:
        migrate.migrate(c)


def extension_version(url: str) -> str | None:
    with connect(url) as c:
        row = c.execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'passthrough'").fetchone()
    return row and row[0]


# --------------------------------------------------------------------------- catalog snapshot

# Every namespace a user object can be in, except the migrator's ledger. A NULL ACL means the default
# privileges, so ACLs are compared as coalesce(acl, acldefault(kind, owner)): what pg_dump preserves.
USER_NS = """n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'passthrough_migrations')
  AND n.nspname !~ '^pg_(toast_)?temp_'"""

SNAPSHOT_QUERIES = {
    "schemas": f"""
        SELECT n.nspname, pg_get_userbyid(n.nspowner), coalesce(n.nspacl, acldefault('n', n.nspowner))::text[]
        FROM pg_namespace n WHERE {USER_NS}""",
    "relations": f"""
        SELECT n.nspname, c.relname, c.relkind, c.relpersistence, c.reloptions,
               coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", c.relowner))::text[],
               pg_get_userbyid(c.relowner), am.amname, c.relrowsecurity, c.relforcerowsecurity,
               c.relreplident, c.relispartition, pg_get_expr(c.relpartbound, c.oid),
               CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_am am ON am.oid = c.relam
        WHERE {USER_NS}""",
    "columns": f"""
        SELECT n.nspname, c.relname, row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum), a.attname,
               format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
               a.attidentity, a.attgenerated, co.collname, a.attacl::text[]
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_collation co ON co.oid = a.attcollation
        WHERE {USER_NS} AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'c', 'f')""",
    "constraints": f"""
        SELECT n.nspname, coalesce(c.relname, t.typname), con.conname, con.contype, pg_get_constraintdef(con.oid),
               con.condeferrable, con.condeferred, con.convalidated
        FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
        LEFT JOIN pg_class c ON c.oid = con.conrelid LEFT JOIN pg_type t ON t.oid = con.contypid
        WHERE {USER_NS}""",
    "indexes": f"""
        SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid), i.indisunique, i.indisprimary,
               i.indisexclusion, i.indimmediate, i.indisreplident
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {USER_NS}""",
    "triggers": f"""
        SELECT n.nspname, c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {USER_NS} AND NOT t.tgisinternal""",
    "sequences": f"""
        SELECT n.nspname, c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmax,
               s.seqmin, s.seqcache, s.seqcycle,
               (SELECT string_agg(format('%s.%s (%s)', d.refobjid::regclass, a.attname, d.deptype), ', ')
                FROM pg_depend d
                JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {USER_NS}""",
    "functions": f"""
        SELECT p.oid::regprocedure::text, p.prokind, l.lanname, p.prosecdef, p.proconfig,
               coalesce(p.proacl, acldefault('f', p.proowner))::text[],
               pg_get_userbyid(p.proowner), p.provolatile, p.proparallel, p.proisstrict, p.proleakproof,
               p.procost, p.prorows, p.proretset, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
               CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END, p.prosrc
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
        WHERE {USER_NS}""",
    "types": f"""
        SELECT n.nspname, t.typname, t.typtype, coalesce(t.typacl, acldefault('T', t.typowner))::text[],
               pg_get_userbyid(t.typowner),
               CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END, t.typnotnull,
               t.typdefault,
               (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid)
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE {USER_NS}""",
    "policies": f"""
        SELECT n.nspname, c.relname, p.polname, p.polcmd, p.polpermissive, p.polroles::regrole[]::text[],
               pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
        FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {USER_NS}""",
    "rules": """
        SELECT schemaname, tablename, rulename, definition FROM pg_rules
        WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'passthrough_migrations')""",
    "default_privileges": """
        SELECT defaclrole::regrole::text, defaclnamespace::regnamespace::text, defaclobjtype, defaclacl::text[]
        FROM pg_default_acl""",
    # Every comment on a user object (and the schema): pg_identify_object names it whatever its kind.
    "comments": """
        SELECT o.type, o.identity, d.description
        FROM pg_description d, LATERAL pg_identify_object(d.classoid, d.objoid, d.objsubid) o
        WHERE (d.objoid >= 16384 OR o.identity = 'public')
          AND o.type <> 'extension'
          AND o.identity <> 'passthrough_migrations' AND o.identity NOT LIKE 'passthrough\\_migrations.%'""",
}


def _freeze(value):
    if isinstance(value, list):
        # ACLs: the same grants in another order are the same privileges
        items = [_freeze(v) for v in value]
        return tuple(sorted(items, key=repr)) if all(isinstance(v, str) and "=" in v for v in items) else tuple(items)
    return value


def catalog_snapshot(url: str) -> dict[str, set[tuple]]:
    """Every user object of the database, by kind, as comparable rows (names, never oids)."""
    with connect(url) as c:
        c.execute("SET search_path = pg_catalog")  # every name outside pg_catalog comes out qualified
        return {
            section: {tuple(_freeze(v) for v in row) for row in c.execute(query).fetchall()}
            for section, query in SNAPSHOT_QUERIES.items()
        }


def seeded_rows(url: str) -> dict[str, set[tuple]]:
    """The rows an install creates (times left out: they are install times)."""
    with connect(url) as c:
        return {
            "settings": set(c.execute(
                "SELECT singleton, passthrough_enabled, max_future_skew FROM passthrough.settings").fetchall()),
            "identifier_types": set(c.execute(
                "SELECT id, name, high_confidence FROM passthrough.identifier_types").fetchall()),
        }


def assert_same(left: dict[str, set], right: dict[str, set], labels: tuple[str, str]) -> None:
    problems = []
    for section in sorted(set(left) | set(right)):
        only_left = left.get(section, set()) - right.get(section, set())
        only_right = right.get(section, set()) - left.get(section, set())
        for label, rows in ((labels[0], only_left), (labels[1], only_right)):
            for row in sorted(rows, key=repr):
                problems.append(f"{section}: only in {label}: {row!r}"[:1500])
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:40])


def test_the_snapshot_sees_the_whole_schema(make_database):
    url = make_database()
    install_migrator(url)
    snap = catalog_snapshot(url)
    names = {row[1] for row in snap["relations"]}
    assert {"settings", "identifier_types", "memberships", "events", "audiences"} <= names
    functions = {row[0] for row in snap["functions"]}
    assert "passthrough.apply_events(jsonb,text,boolean,text)" in functions
    bodies = {row[0]: row for row in snap["functions"]}
    enable = bodies["passthrough.enable()"]
    assert enable[3] is True and enable[4] == ("search_path=pg_catalog, pg_temp",)  # prosecdef, proconfig
    assert "UPDATE passthrough.settings" in enable[16]
    assert not any(s[0] == "passthrough_migrations" for s in snap["schemas"])
    assert ("schema", "passthrough") in {row[:2] for row in snap["comments"]}
    # and it notices a difference of any kind
    with connect(url, autocommit=True) as c:
        c.execute("COMMENT ON COLUMN passthrough.settings.updated_at IS 'changed'")
        c.execute("GRANT EXECUTE ON FUNCTION passthrough.is_enabled() TO PUBLIC")
    changed = catalog_snapshot(url)
    assert changed["comments"] != snap["comments"] and changed["functions"] != snap["functions"]


# --------------------------------------------------------------------------- make install-extension


def test_make_install_extension_targets_the_servers_sharedir(tmp_path, server_config):
    pg_config = tool(server_config, "pg_config")
    sharedir = run(pg_config, "--sharedir").stdout.strip()
    assert os.path.realpath(sharedir) == os.path.realpath(server_config["SHAREDIR"])
    pgxs = run(pg_config, "--pgxs").stdout.strip()
    # -o: use the packaged script as it is (test_sql_sources checks that it is current)
    out = run("make", "--no-print-directory", "-C", str(ROOT), "-o", f"pyapp/sql/passthrough--{DEFAULT_VERSION}.sql",
              "install-extension", f"PG_CONFIG={pg_config}", f"DESTDIR={tmp_path}").stdout
    assert ("extension.mk" in out) == Path(pgxs).is_file(), out
    target = Path(f"{tmp_path}{sharedir}") / "extension"
    installed = {p.name: p.read_bytes() for p in target.iterdir()}
    assert installed == extension_files()
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in target.iterdir())

    run("make", "--no-print-directory", "-C", str(ROOT), "uninstall-extension", f"PG_CONFIG={pg_config}",
        f"DESTDIR={tmp_path}")
    assert list(target.iterdir()) == []


def test_make_install_extension_without_pgxs(tmp_path):
    # a pg_config whose PGXS is not installed (no server development package): plain install(1)
    fake = tmp_path / "pg_config"
    fake.write_text(f"#!/bin/sh\ncase \"$1\" in --sharedir) echo {tmp_path}/share;; "
                    f"--pgxs) echo {tmp_path}/no/pgxs.mk;; esac\n")
    fake.chmod(0o755)
    out = run("make", "--no-print-directory", "-C", str(ROOT), "-o", f"pyapp/sql/passthrough--{DEFAULT_VERSION}.sql",
              "install-extension", f"PG_CONFIG={fake}").stdout
    assert "no PGXS" in out
    assert {p.name: p.read_bytes() for p in (tmp_path / "share" / "extension").iterdir()} == extension_files()


def test_the_fixture_installed_what_make_installs(extension_installed, pg_server_url):
    assert {name: (extension_installed / name).read_bytes() for name in extension_files()} == extension_files()
    with psycopg.connect(pg_server_url) as c:
        default, comment = c.execute(
            "SELECT default_version, comment FROM pg_available_extensions WHERE name = 'passthrough'").fetchone()
        versions = {v for (v,) in c.execute(
            "SELECT version FROM pg_available_extension_versions WHERE name = 'passthrough'").fetchall()}
    assert default == DEFAULT_VERSION and comment
    installs = {m.group(1) for m in (re.match(r"passthrough--([\d.]+)\.sql$", n) for n in extension_files()) if m}
    assert installs <= versions


# --------------------------------------------------------------------------- the same schema, three ways


@pytest.fixture(scope="module")
def migrator_install(pg_server_url) -> dict:
    """One migrator install, snapshotted once for the module (its database is dropped right away)."""
    from pgcluster import create_database, drop_database

    name = f"test_ext_migrator_{uuid.uuid4().hex}"
    url = create_database(pg_server_url, name, template="template0")
    try:
        install_migrator(url)
        with connect(url) as c:
            registered = c.execute("SELECT passthrough._register_dump_tables()").fetchone()[0]
        return {"schema": catalog_snapshot(url), "rows": seeded_rows(url), "registered": registered}
    finally:
        drop_database(pg_server_url, name)


def test_create_extension_gives_the_migrators_schema(extension_installed, migrator_install, make_database):
    url = make_database()
    install_extension(url)
    assert extension_version(url) == DEFAULT_VERSION
    assert_same(catalog_snapshot(url), migrator_install["schema"], ("CREATE EXTENSION", "migrator"))
    assert seeded_rows(url) == migrator_install["rows"]
    # the helper that registers tables for pg_dump does nothing outside CREATE/ALTER EXTENSION
    assert migrator_install["registered"] == 0


def test_the_oldest_version_updated_step_by_step_gives_the_same_schema(extension_installed, migrator_install,
                                                                       make_database, pg_server_url):
    chain = migrate.packaged_migrations()  # the oldest install script, then every upgrade
    assert chain[-1].version == DEFAULT_VERSION, "the upgrade chain must end at default_version"
    with psycopg.connect(pg_server_url) as c:
        paths = {(s, t): p for s, t, p in c.execute(
            "SELECT source, target, path FROM pg_extension_update_paths('passthrough')").fetchall()}
    if len(chain) > 1:
        assert paths[(chain[0].version, DEFAULT_VERSION)] == "--".join(m.version for m in chain)

    url = make_database()
    install_extension(url, chain[0].version)
    assert extension_version(url) == chain[0].version
    with connect(url, autocommit=True) as c:
        for step in chain[1:]:
            c.execute(sql.SQL("ALTER EXTENSION passthrough UPDATE TO {}").format(sql.Literal(step.version)))
            assert extension_version(url) == step.version
        c.execute("ALTER EXTENSION passthrough UPDATE")  # at the default version: nothing to do
    assert extension_version(url) == DEFAULT_VERSION
    assert_same(catalog_snapshot(url), migrator_install["schema"], ("updated extension", "migrator"))
    assert seeded_rows(url) == migrator_install["rows"]


def test_drop_extension_leaves_only_the_schema_and_it_can_be_installed_again(extension_installed, make_database):
    url = make_database()
    install_extension(url)
    with connect(url, autocommit=True) as c:
        c.execute("DROP EXTENSION passthrough")
        left = c.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'passthrough'::regnamespace").fetchone()[0]
        left += c.execute(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'passthrough'::regnamespace").fetchone()[0]
        assert left == 0
        c.execute("CREATE EXTENSION passthrough")  # the schema is there: it is used as it is
        c.execute("DROP EXTENSION passthrough")
        c.execute("DROP SCHEMA passthrough")
        assert c.execute("SELECT to_regnamespace('passthrough')").fetchone()[0] is None


def test_a_role_with_create_on_the_database_installs_it_without_superuser(extension_installed, make_database,
                                                                         pg_server_url):
    # passthrough.control: superuser = false. The installing role owns every object.
    url = make_database()
    role = f"pt_installer_{os.getpid()}"
    with connect(pg_server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    try:
        with connect(url, autocommit=True) as c:
            c.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(c.info.dbname), sql.Identifier(role)))
            c.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            c.execute("CREATE EXTENSION passthrough")
            owners = {o for (o,) in c.execute(
                "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class"
                " WHERE relnamespace = 'passthrough'::regnamespace").fetchall()}
            assert owners == {role}
            c.execute("SELECT passthrough.enable()")  # the owner may call everything
            c.execute("DROP EXTENSION passthrough")
            c.execute("DROP SCHEMA passthrough")
            c.execute("RESET ROLE")
            c.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    finally:
        with connect(pg_server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


# --------------------------------------------------------------------------- pg_dump


def test_every_table_and_sequence_is_registered_for_pg_dump(extension_installed, make_database):
    url = make_database()
    install_extension(url)
    with connect(url) as c:
        relations = {r for (r,) in c.execute(
            "SELECT oid::regclass::text FROM pg_class"
            " WHERE relnamespace = 'passthrough'::regnamespace AND relkind IN ('r', 'p', 'S')").fetchall()}
        config, conditions = c.execute(
            "SELECT extconfig::regclass[]::text[], extcondition FROM pg_extension WHERE extname = 'passthrough'"
        ).fetchone()
    assert set(config) == relations, (
        "a table or sequence that is not registered comes back empty from pg_dump/pg_restore: "
        "create it in sql/tables/ (before sql/finish/010_extension_dump.sql), or call passthrough._register_dump_tables() after it")
    assert set(conditions) == {""}


KEY_NAMES = ("etl", "old")


def query(c) -> Callable[..., list]:
    def q(text: str, *params) -> list:
        cur = c.execute(text, params)
        return cur.fetchall() if cur.description else []
    return q


def populate(url: str) -> dict:
    """Data in every table, through the API (plus what the restore must not lose: sequence positions)."""
    with connect(url, autocommit=True) as c:
        q = query(c)
        q("SELECT passthrough.enable()")
        q("SELECT passthrough.set_max_future_skew(interval '2 hours')")
        q("SELECT passthrough.add_identifier_type('anon_id', false)")
        q("SELECT passthrough.add_identifier_type('vuid', true)")         # a seeded type, changed
        q("SELECT passthrough.remove_identifier_type('customer_id')")     # a seeded type, removed and added
        q("SELECT passthrough.add_identifier_type('customer_id')")        # again (a new id)
        q("SELECT passthrough.create_audience('buyers', 'ext-buyers', 'Bought twice', '{\"team\": \"crm\"}')")
        q("SELECT passthrough.put_audience('buyers', 'ext-buyers', 'Bought at least twice')")
        q("SELECT passthrough.create_audience('churned', 'ext-churned')")
        q("SELECT passthrough.apply_events(%s::jsonb, 'http')",
          '[{"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "u1"},'
          '  "data": {"audience_id": "ext-buyers", "ts": 1700000000, "idempotence_id": "i-1"}},'
          ' {"type": "passthrough", "action": "qualify", "identifiers": {"customer_id": "c1"},'
          '  "data": {"audience_id": "ext-buyers", "ts": 1700000001}},'
          ' {"type": "passthrough", "action": "qualify", "identifiers": {"email": "a@example.com"},'
          '  "data": {"audience_id": "ext-undefined-yet", "ts": 1700000002}}]')
        q("SELECT passthrough.apply_event('fs_user_id', 'u1', 'ext-churned', 'qualify', 1700000003)")
        q("SELECT passthrough.apply_event('fs_user_id', 'u1', 'ext-churned', 'disqualify', 1700000004)")
        q("SELECT passthrough.begin_load()")
        q("INSERT INTO pg_temp.passthrough_load (type, action, identifier_type, identifier, audience_id, ts)"
          " VALUES ('passthrough', 'qualify', 'email', 'v1@example.com', 'ext-buyers', 1700000005),"
          "        ('passthrough', 'qualify', 'fs_user_id', 'u2', 'ext-churned', 1700000006),"
          "        ('passthrough', 'promote', 'fs_user_id', 'u3', 'ext-churned', 1700000007)")
        q("SELECT * FROM passthrough.load_staged(p_source => 'load', p_rejects => true)")
        q("SELECT passthrough.begin_load()")  # a snapshot: snapshots and snapshot_members rows
        q("INSERT INTO pg_temp.passthrough_load (type, action, identifier_type, identifier, audience_id, ts)"
          " VALUES ('passthrough', 'qualify', 'fs_user_id', 'u2', 'ext-churned', 1700000008)")
        q("SELECT * FROM passthrough.import_snapshot('ext-churned', 1700000009, p_force => true)")
        keys = {name: q("SELECT passthrough.create_api_key(%s, 'private')", name)[0][0] for name in KEY_NAMES}
        q("SELECT passthrough.revoke_api_key('old')")
        q("SELECT passthrough.create_webhook('crm', 'https://crm.example.com/hook', ARRAY['buyers'], false)")
        q("SELECT passthrough.set_audience_ttl('buyers', interval '36500 days')")  # membership_expiries rows
    return keys


def table_contents(url: str) -> dict[str, list]:
    """Every row of every table and the position of every sequence, in schema passthrough."""
    with connect(url) as c:
        tables = [t for (t,) in c.execute(
            "SELECT oid::regclass::text FROM pg_class WHERE relnamespace = 'passthrough'::regnamespace"
            " AND relkind = 'r' ORDER BY 1").fetchall()]
        sequences = [s for (s,) in c.execute(
            "SELECT oid::regclass::text FROM pg_class WHERE relnamespace = 'passthrough'::regnamespace"
            " AND relkind = 'S' ORDER BY 1").fetchall()]
        out = {t: sorted(r for (r,) in c.execute(f"SELECT to_jsonb(t)::text FROM {t} t").fetchall()) for t in tables}
        out.update({s: c.execute(f"SELECT last_value, is_called FROM {s}").fetchone() for s in sequences})
    return out


def dump_and_restore(server_config, make_database, tmp_path, source_url: str, *restore_options: str) -> str:
    dump = tmp_path / "passthrough.dump"
    run(tool(server_config, "pg_dump"), "--format=custom", f"--file={dump}", f"--dbname={source_url}")
    target = make_database(prefix="test_restored")
    run(tool(server_config, "pg_restore"), "--exit-on-error", *restore_options, f"--dbname={target}", str(dump))
    return target


def assert_works_after_restore(url: str, keys: dict) -> None:
    with connect(url, autocommit=True) as c:
        q = query(c)
        ids = {n: i for n, i in q("SELECT name, id FROM passthrough.identifier_types")}
        q("SELECT passthrough.add_identifier_type('device_id')")  # its id comes from the restored sequence
        new_id = q("SELECT id FROM passthrough.identifier_types WHERE name = 'device_id'")[0][0]
        assert new_id > max(ids.values())
        assert q("SELECT passthrough.authenticate_api_key(sha256(convert_to(%s, 'UTF8')))", keys["etl"]) == [
            ("private",)]
        assert q("SELECT passthrough.authenticate_api_key(sha256(convert_to(%s, 'UTF8')))", keys["old"]) == [(None,)]
        q("SELECT passthrough.create_api_key('old', 'public')")  # the revoked key's name is free again
        assert q("SELECT name FROM passthrough.customer_audiences('customer_id', 'c1')") == [("buyers",)]
        result = q("SELECT * FROM passthrough.apply_event('fs_user_id', 'u9', 'ext-buyers', 'qualify')")[0]
        assert result[1:] == (1, 0, 1)
        assert q("SELECT size FROM passthrough.get_audience('buyers')") == [(4,)]


@pytest.mark.parametrize("how, restore_options", [
    ("extension", ()),
    ("extension", ("--single-transaction",)),  # CREATE EXTENSION and the data in one transaction
    ("migrator", ()),
], ids=["extension", "extension-single-transaction", "migrator"])
def test_pg_dump_and_restore_round_trip(how, restore_options, extension_installed, server_config, make_database,
                                        tmp_path):
    source = make_database()
    install_extension(source) if how == "extension" else install_migrator(source)
    keys = populate(source)
    before, schema_before = table_contents(source), catalog_snapshot(source)
    assert all(before.values()), before  # data in every table

    restored = dump_and_restore(server_config, make_database, tmp_path, source, *restore_options)

    assert extension_version(restored) == (DEFAULT_VERSION if how == "extension" else None)
    assert table_contents(restored) == before
    assert_same(catalog_snapshot(restored), schema_before, ("restored", "original"))
    if how == "migrator":
        with connect(restored) as c:
            assert migrate.migrate(c) == []  # the ledger came back too
    assert_works_after_restore(restored, keys)


def test_a_removed_default_identifier_type_comes_back_after_restoring_an_extension_install(
        extension_installed, server_config, make_database, tmp_path):
    # Documented in docs/dba.md (Backup): CREATE EXTENSION seeds the default types during the restore,
    # and a dump holds rows, not the absence of one.
    source = make_database()
    install_extension(source)
    with connect(source, autocommit=True) as c:
        c.execute("SELECT passthrough.remove_identifier_type('email')")
    restored = dump_and_restore(server_config, make_database, tmp_path, source)
    with connect(restored) as c:
        names = {n for (n,) in c.execute("SELECT name FROM passthrough.identifier_types").fetchall()}
    assert "email" in names


def test_the_restore_triggers_change_nothing_in_normal_operation(extension_installed, make_database):
    url = make_database()
    install_extension(url)
    with connect(url, autocommit=True) as c:
        ids = dict(c.execute("SELECT name, id FROM passthrough.identifier_types").fetchall())
        # an upsert of a seeded type keeps its id (memberships refer to it), seeded or not
        c.execute("SELECT passthrough.add_identifier_type('vuid', true)")
        c.execute("SELECT passthrough.add_identifier_type('fs-user-id', true)")
        c.execute("SELECT passthrough.add_identifier_type('anon_id', false)")
        after = dict(c.execute("SELECT name, id FROM passthrough.identifier_types").fetchall())
        assert {n: after[n] for n in ids} == ids and after["anon_id"] > max(ids.values())
        # a changed settings row is never replaced: a second row is refused as in a migrator install
        c.execute("SELECT passthrough.set_max_future_skew(interval '5 minutes')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute("INSERT INTO passthrough.settings DEFAULT VALUES")
        assert c.execute("SELECT max_future_skew FROM passthrough.settings").fetchone()[0].total_seconds() == 300
        # nor is a changed identifier type, even by an insert with its own id
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute("INSERT INTO passthrough.identifier_types (id, name, high_confidence)"
                      " OVERRIDING SYSTEM VALUE VALUES (%s, 'vuid', false)", (ids["vuid"],))


# --------------------------------------------------------------------------- releases


def test_released_install_scripts_are_frozen():
    """sql/released.sha256 lists the install script of every released version; none may change."""
    listed = []
    for line in RELEASED.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        digest, path = line.split(maxsplit=1)
        listed.append(path)
        assert re.fullmatch(r"pyapp/sql/passthrough--\d+\.\d+\.\d+\.sql", path), line
        assert hashlib.sha256((ROOT / path).read_bytes()).hexdigest() == digest, (
            f"{path} changed after its release; write an upgrade script instead (docs/dba.md, Releasing a version)")
    # the oldest install script is where every migrator install starts: once released, it is listed
    assert len(listed) == len(set(listed))


def test_upgrade_scripts_are_shipped_and_chain_to_the_default_version():
    sources = {p.name: p.read_bytes() for p in (ROOT / "sql").glob("passthrough--*--*.sql")}
    shipped = {p.name: p.read_bytes() for p in PACKAGED.glob("passthrough--*--*.sql")}
    assert shipped == sources, "pyapp/sql is stale: run `make sql` (it copies sql/passthrough--A--B.sql)"
    chain = migrate.packaged_migrations()
    assert chain[-1].version == DEFAULT_VERSION
    assert {m.filename for m in chain[1:]} == set(shipped), "an upgrade script is not on the chain"
    assert (PACKAGED / f"passthrough--{DEFAULT_VERSION}.sql").is_file()


# --------------------------------------------------------------------------- the migrator beside an extension


def test_migrator_leaves_an_extension_install_alone(extension_installed, fresh_db_url):
    install_extension(fresh_db_url)
    with connect(fresh_db_url) as c:
        assert migrate.migrate(c) == []
        assert {(s["applied"], s["installed_by"]) for s in migrate.status(c)} == {(True, "extension")}
        assert migrate.extension_version(c) == migrate.packaged_migrations()[-1].version
        ledger = c.execute("SELECT to_regclass('passthrough_migrations.applied')").fetchone()[0]
    assert ledger is None  # the migrator wrote nothing


def test_migrator_refuses_an_older_extension_version(extension_installed, fresh_db_url):
    install_extension(fresh_db_url)
    newer = migrate.packaged_migrations() + [migrate.Migration("passthrough--0.1.0--9.0.0.sql", "9.0.0", "SELECT 1;")]
    with connect(fresh_db_url) as c:
        with pytest.raises(migrate.MigrationError, match="ALTER EXTENSION passthrough UPDATE"):
            migrate.migrate(c, newer)


def test_readyz_is_ready_on_an_extension_install(extension_installed, fresh_db_url):
    install_extension(fresh_db_url)
    with make_client(fresh_db_url, TEST_CONFIG) as client:
        response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "passthrough_enabled": False}
