"""passthrough.create_api_key / list_api_keys / revoke_api_key / authenticate_api_key (sql/functions/270_api_keys.sql)."""

from __future__ import annotations

import hashlib
import re

import psycopg
import pytest

from sqlhelpers import expect_error, rows, scalar

# `db`: a connection to a database shared by this module, emptied (API keys included) before each test
pytest_plugins = ["http_fixtures"]

KEY_FORMAT = re.compile(r"^pt_(public|private)_[0-9a-f]{64}$")


def create(db, name, scope):
    return scalar(db, "SELECT passthrough.create_api_key(%s, %s)", (name, scope))


def scope_of(db, key):
    return scalar(db, "SELECT passthrough.authenticate_api_key(%s)", (hashlib.sha256(key.encode()).digest(),))


def test_a_new_key_authenticates_with_its_scope(db):
    public = create(db, "sdk", "public")
    private = create(db, "admin", "private")
    assert KEY_FORMAT.match(public) and public.startswith("pt_public_")
    assert KEY_FORMAT.match(private) and private.startswith("pt_private_")
    assert scope_of(db, public) == "public"
    assert scope_of(db, private) == "private"


def test_only_the_hash_is_stored(db):
    key = create(db, "sdk", "public")
    stored = rows(db, "SELECT to_jsonb(k)::text, key_hash FROM passthrough.api_keys k")
    assert len(stored) == 1
    row_text, key_hash = stored[0]
    assert key not in row_text and key[10:] not in row_text  # neither the key nor its random part
    assert bytes(key_hash) == hashlib.sha256(key.encode()).digest()


def test_keys_are_random(db):
    keys = {create(db, f"k{i}", "public") for i in range(20)}
    assert len(keys) == 20
    assert len({key[-64:-48] for key in keys}) == 20  # no shared prefix of the random part


def test_unknown_key_or_garbage_authenticates_as_nothing(db):
    create(db, "sdk", "public")
    assert scope_of(db, "pt_public_" + "0" * 64) is None
    assert scope_of(db, "") is None
    assert scalar(db, "SELECT passthrough.authenticate_api_key(NULL)") is None


def test_revoked_key_no_longer_authenticates_and_its_name_can_be_reused(db):
    old = create(db, "sdk", "public")
    db.execute("SELECT passthrough.revoke_api_key('sdk')")
    assert scope_of(db, old) is None
    new = create(db, "sdk", "private")
    assert scope_of(db, new) == "private" and scope_of(db, old) is None
    listed = rows(db, "SELECT name, scope, revoked_at IS NOT NULL FROM passthrough.list_api_keys()")
    assert listed == [("sdk", "private", False), ("sdk", "public", True)]  # active first


def test_list_shows_names_scopes_and_times_never_keys(db):
    create(db, "b-key", "private")
    create(db, "a.key_1", "public")
    listed = db.execute("SELECT * FROM passthrough.list_api_keys()")
    assert [c.name for c in listed.description] == ["name", "scope", "created_at", "revoked_at"]
    assert [(r[0], r[1], r[3]) for r in listed.fetchall()] == [("a.key_1", "public", None), ("b-key", "private", None)]


def test_duplicate_active_name_is_refused(db):
    create(db, "sdk", "public")
    error = expect_error(db, "SELECT passthrough.create_api_key('sdk', 'private')", sqlstate="PT011")
    assert error.message == "an API key named 'sdk' already exists"
    assert "passthrough keys revoke" in error.hint
    assert scalar(db, "SELECT count(*) FROM passthrough.api_keys") == 1


@pytest.mark.parametrize("name", ["", "-starts-with-dash", "has space", "x" * 64, "ünïcode", None])
def test_invalid_names_are_refused(db, name):
    error = expect_error(db, "SELECT passthrough.create_api_key(%s, 'public')", (name,), "PT010")
    assert error.detail == "field: name"
    assert scalar(db, "SELECT count(*) FROM passthrough.api_keys") == 0


@pytest.mark.parametrize("scope", ["admin", "PUBLIC", "", None])
def test_invalid_scopes_are_refused(db, scope):
    error = expect_error(db, "SELECT passthrough.create_api_key('k', %s)", (scope,), "PT010")
    assert error.detail == "field: scope"
    assert "public keys send events" in error.hint


def test_revoking_a_missing_or_revoked_key_is_an_error(db):
    error = expect_error(db, "SELECT passthrough.revoke_api_key('nope')", sqlstate="PT012")
    assert error.message == "no active API key named 'nope'"
    create(db, "sdk", "public")
    db.execute("SELECT passthrough.revoke_api_key('sdk')")
    expect_error(db, "SELECT passthrough.revoke_api_key('sdk')", sqlstate="PT012")


def test_key_functions_are_security_definer_with_a_pinned_search_path_and_documented(db):
    found = rows(
        db,
        "SELECT p.proname, p.prosecdef, p.proconfig, obj_description(p.oid, 'pg_proc') IS NOT NULL,"
        " has_function_privilege('public', p.oid, 'EXECUTE')"
        " FROM pg_proc p WHERE p.pronamespace = 'passthrough'::regnamespace AND p.proname LIKE '%%api_key%%'"
        " AND p.proname NOT LIKE '\\_%%'"  # the public ones; _require_api_key is the server's (tested below)
        " ORDER BY 1",
    )
    assert [r[0] for r in found] == ["authenticate_api_key", "create_api_key", "list_api_keys", "revoke_api_key"]
    for name, secdef, config, commented, public_may_execute in found:
        assert secdef and config == ["search_path=pg_catalog, pg_temp"], name
        assert commented, name
        assert not public_may_execute, name


def test_require_api_key_answers_as_the_api_does(db):
    public = db.execute("SELECT passthrough.create_api_key('pub', 'public')").fetchone()[0]
    private = db.execute("SELECT passthrough.create_api_key('priv', 'private')").fetchone()[0]
    check = "SELECT passthrough._require_api_key(sha256(convert_to(%s, 'UTF8')), %s)"
    assert db.execute(check, (public, "public")).fetchone() == ("public",)
    assert db.execute(check, (private, "public")).fetchone() == ("private",)
    assert db.execute(check, (private, "private")).fetchone() == ("private",)
    error = expect_error(db, check, (public, "private"), "PT038")
    assert error.message == "this endpoint needs a private API key; the key sent is public"
    assert expect_error(db, check, ("pt_public_" + "0" * 64, "public"), "PT037").message == (
        "the API key is unknown or revoked")
    db.execute("SELECT passthrough.revoke_api_key('pub')")
    expect_error(db, check, (public, "public"), "PT037")


# --------------------------------------------------------------------------- passthrough keys (CLI)


def test_cli_keys_create_list_revoke(http_database_url, db, capsys):
    from pyapp import cli

    assert cli.main(["keys", "create", "--name", "sdk", "--scope", "public", "--database-url", http_database_url]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert KEY_FORMAT.match(key) and out == key + "\n"  # stdout is the key alone: KEY=$(passthrough keys create ...)
    assert "shown only this once" in err
    assert scope_of(db, key) == "public"

    assert cli.main(["keys", "list", "--database-url", http_database_url]) == 0
    out = capsys.readouterr().out
    assert "sdk" in out and "public" in out and key not in out

    assert cli.main(["keys", "revoke", "sdk", "--database-url", http_database_url]) == 0
    assert "revoked API key 'sdk'" in capsys.readouterr().out
    assert scope_of(db, key) is None


def test_cli_keys_errors_come_from_sql(http_database_url, db, capsys):
    from pyapp import cli

    # the scope is checked while parsing, before any database starts (tests/test_cli.py); SQL refuses it as well
    with pytest.raises(psycopg.Error, match="invalid API key scope 'admin'"):
        with psycopg.connect(http_database_url) as conn:
            conn.execute("SELECT passthrough.create_api_key('k', 'admin')")
    assert cli.main(["keys", "revoke", "nope", "--database-url", http_database_url]) == 1
    err = capsys.readouterr().err
    assert "no active API key named 'nope'" in err and "passthrough keys list" in err


def test_cli_keys_on_an_unmigrated_database_says_to_migrate(fresh_db_url, capsys):
    from pyapp import cli

    assert cli.main(["keys", "list", "--database-url", fresh_db_url]) == 1
    assert "passthrough migrate" in capsys.readouterr().err
