"""``passthrough segments list|get|create|update|delete|validate``: /v3/segments from the command line, through
the same SQL functions as the HTTP routes."""

from __future__ import annotations

import json

import pytest

from pyapp import cli
from pyapp.cli import segments as cli_segments
from pyapp.web import segments as web_segments
from sqlhelpers import rows


def run(db_url: str, *argv: str) -> int:
    return cli.main(["segments", *argv, "--database-url", db_url])


def test_the_cli_runs_the_statements_the_http_routes_run():
    assert cli_segments.CREATE_SQL == web_segments.CREATE_SQL
    assert cli_segments.PUT_SQL == web_segments.PUT_SQL
    assert cli_segments.VALIDATE_SQL == web_segments.VALIDATE_SQL


def test_create_get_list_update_delete(db_url, conn, capsys):
    assert run(db_url, "list") == 0
    assert capsys.readouterr().out == "no segments\n"
    assert run(db_url, "create", "vip", "--external-audience-id", "crm-vip", "--description", "VIP customers",
               "--metadata", '{"owner": "crm"}', "--ttl-seconds", "2592000") == 0
    assert capsys.readouterr().out == "created segment 'vip' (revision 1)\n"
    assert run(db_url, "create", "news", "--external-audience-id", "crm-news") == 0
    capsys.readouterr()
    assert rows(conn, "SELECT name, external_audience_id, description, metadata, revision, ttl"
                      " FROM passthrough.get_audience('vip')")[0][:5] == (
        "vip", "crm-vip", "VIP customers", {"owner": "crm"}, 1)

    assert run(db_url, "get", "vip", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert {k: shown[k] for k in ("segment_id", "revision", "description", "metadata", "definition", "size",
                                  "ttl_seconds")} == {
        "segment_id": "vip", "revision": 1, "description": "VIP customers", "metadata": {"owner": "crm"},
        "definition": {"external": {"external_audience_id": "crm-vip"}}, "size": 0, "ttl_seconds": 2592000}
    assert shown["created_at"].endswith("Z")

    assert run(db_url, "get", "vip") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["field", "value"]
    assert "external_audience_id  crm-vip" in lines and "ttl_seconds           2592000" in lines

    assert run(db_url, "list", "--json") == 0
    assert [(s["segment_id"], s["ttl_seconds"]) for s in json.loads(capsys.readouterr().out)] == [
        ("news", None), ("vip", 2592000)]
    assert run(db_url, "list") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["segment_id", "external_audience_id", "size", "ttl_seconds", "revision", "updated_at",
                              "description"]
    assert out[2].startswith("news ") and out[3].startswith("vip ") and out[3].endswith("VIP customers")

    # update is PUT: the ttl is kept unless given; the description left out is cleared
    assert run(db_url, "update", "vip", "--external-audience-id", "crm-vip") == 0
    assert capsys.readouterr().out == "saved segment 'vip' (revision 2)\n"
    assert rows(conn, "SELECT description, revision, ttl FROM passthrough.get_audience('vip')")[0][:2] == (None, 2)
    assert rows(conn, "SELECT extract(epoch FROM ttl)::int FROM passthrough.get_audience('vip')") == [(2592000,)]
    assert run(db_url, "update", "vip", "--external-audience-id", "crm-vip", "--no-ttl") == 0
    assert capsys.readouterr().out == "saved segment 'vip' (revision 3)\n"
    assert rows(conn, "SELECT ttl FROM passthrough.get_audience('vip')") == [(None,)]
    assert run(db_url, "update", "vip", "--external-audience-id", "crm-vip") == 0  # nothing changed
    assert capsys.readouterr().out == "saved segment 'vip' (revision 3)\n"

    assert run(db_url, "delete", "vip") == 0
    assert capsys.readouterr().out == "deleted segment 'vip'\n"
    assert rows(conn, "SELECT name FROM passthrough.list_audiences(10, NULL)") == [("news",)]


def test_errors_come_from_sql(db_url, conn, capsys):
    assert run(db_url, "create", "news", "--external-audience-id", "crm-news") == 0
    capsys.readouterr()
    assert run(db_url, "create", "news", "--external-audience-id", "crm-other") == 1
    assert "already exists" in capsys.readouterr().err
    assert run(db_url, "get", "nope") == 1
    assert "audience 'nope' does not exist" in capsys.readouterr().err
    assert run(db_url, "delete", "nope") == 1
    assert "audience 'nope' does not exist" in capsys.readouterr().err
    assert run(db_url, "create", "Bad-Id", "--external-audience-id", "x") == 1
    assert "error: invalid audience name 'Bad-Id'" in capsys.readouterr().err
    assert run(db_url, "create", "meta", "--external-audience-id", "x", "--metadata", "[1]") == 1
    assert "metadata must be a JSON object" in capsys.readouterr().err


def test_validate_saves_nothing(db_url, conn, capsys):
    assert run(db_url, "validate", "vip", "--external-audience-id", "crm-vip") == 0
    assert capsys.readouterr().out == "segment 'vip' is valid (nothing saved)\n"
    assert run(db_url, "validate", "Bad-Id", "--external-audience-id", "crm-vip") == 1
    assert "error: invalid audience name 'Bad-Id'" in capsys.readouterr().err
    assert rows(conn, "SELECT count(*) FROM passthrough.list_audiences(10, NULL)") == [(0,)]


def test_arguments_checked_before_the_database(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["segments", "create", "vip", "--metadata", "{not json", "--external-audience-id", "x"])
    assert exited.value.code == 2
    assert "usage: passthrough segments create" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["segments", "create", "vip"])
    assert "--external-audience-id" in capsys.readouterr().err
