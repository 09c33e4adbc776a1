"""The ``passthrough`` command as a whole: arguments checked before any database starts, each subcommand's own
usage and description, where the database is (and that only serve/migrate create one), the banner of serve,
and the table/--json rule every list command follows (pyapp/cli/common.py)."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path

import psycopg
import pytest

from pyapp import cli
from pyapp.cli.common import format_table, plural, redact
from pyapp.cli.parser import build_parser


@pytest.fixture
def no_database_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PASSTHROUGH_DATABASE_URL", raising=False)
    monkeypatch.delenv("PASSTHROUGH_DATA_DIR", raising=False)


@pytest.mark.parametrize(
    ("argv", "usage", "message"),
    [
        (["serve", "--prot", "9000"], "usage: passthrough serve ", "unrecognized arguments: --prot 9000"),
        (["serve", "--port", "70000"], "usage: passthrough serve ", "must be a TCP port from 1 to 65535"),
        (["keys", "create", "--name", "x", "--scope", "admin"], "usage: passthrough keys create ",
         "invalid choice: 'admin'"),
        (["keys", "list", "--bogus"], "usage: passthrough keys list ", "unrecognized arguments: --bogus"),
        (["load", "--writers", "0", "f.ndjson"], "usage: passthrough load ", "--writers: must be a whole number"),
        (["load", "--batch-size", "-5", "f.ndjson"], "usage: passthrough load ",
         "--batch-size: must be a whole number"),
        (["changes", "--limit", "0"], "usage: passthrough changes ", "--limit: must be a whole number"),
        (["settings", "set", "a"], "usage: passthrough settings set ", "required: value"),
    ],
)
def test_arguments_are_refused_with_the_subcommands_usage_before_any_database(
        argv, usage, message, tmp_path, no_database_env, capsys):
    data_dir = tmp_path / "data"
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--data-dir", str(data_dir)])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage) and message in err
    assert not data_dir.exists()  # no embedded PostgreSQL was started, or created


def _leaf_parsers(parser: argparse.ArgumentParser, prefix: str = "passthrough"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _leaf_parsers(sub, f"{prefix} {name}")


def test_every_subcommand_says_what_it_does_in_its_help():
    commands = dict(_leaf_parsers(build_parser()))
    for name in ("passthrough serve", "passthrough migrate", "passthrough status", "passthrough enable",
                 "passthrough disable", "passthrough keys list", "passthrough segments list"):
        assert name in commands
    for name, parser in commands.items():
        assert parser.description and len(parser.description) > 10, name
        assert " ".join(parser.description.split()) in " ".join(parser.format_help().split()), name


def test_keys_create_help_says_what_each_scope_may_do(capsys):
    with pytest.raises(SystemExit):
        cli.main(["keys", "create", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "A private key may also send passthrough events, manage segments" in out
    assert "read the change feed" in out and "import snapshots" in out
    assert "{public,private}" in out


def test_plural():
    assert plural(1, "batch") == "1 batch"
    assert plural(0, "batch") == "0 batches"
    assert plural(2, "event") == "2 events"
    assert plural(12345, "row") == "12,345 rows"
    assert plural(1, "row") == "1 row"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@db/app", "postgresql://u:***@db/app"),
        ("postgresql://db/app?user=u&password=secret", "postgresql://db/app?user=u&password=***"),
        ("postgresql://db/app?password=secret&sslmode=require", "postgresql://db/app?password=***&sslmode=require"),
        ("postgresql://u:pw@db/app?password=other", "postgresql://u:***@db/app?password=***"),
        ("postgresql://db/app?user=u", "postgresql://db/app?user=u"),
    ],
)
def test_redact_hides_passwords_in_the_user_part_and_the_query(url, shown):
    assert redact(url) == shown


def test_a_command_other_than_serve_and_migrate_creates_no_database(tmp_path, no_database_env, capsys):
    data_dir = tmp_path / "elsewhere"
    for argv in (["keys", "list"], ["settings"], ["status"], ["changes"], ["webhooks", "list"], ["enable"],
                 ["segments", "list"]):
        assert cli.main([*argv, "--data-dir", str(data_dir)]) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith(f"error: no database here (looked in {data_dir.resolve()})\n"), (argv, err)
        assert not (data_dir / "pgdata").exists()


def test_a_port_in_use_is_one_line_and_exit_1_without_the_banner(db_url, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["serve", "--no-migrate", "--workers", "1", "--port", str(port),
                         "--database-url", db_url]) == 1
    err = capsys.readouterr().err
    assert f"error: cannot listen on 127.0.0.1:{port}: the port is already in use\n" in err
    assert "HTTP API on" not in err


ROWS = [
    {"name": "crm", "url": "https://example.com/a/very/long/path", "state": "ok"},
    {"name": "newsletter", "url": None, "state": "paused"},
]


def test_table_piped_is_whole_and_aligned():
    assert format_table(ROWS, None).splitlines() == [
        "name        url                                   state",
        "----------  ------------------------------------  ------",
        "crm         https://example.com/a/very/long/path  ok",
        "newsletter                                        paused",
    ]


def test_table_narrower_than_its_terminal_shortens_the_widest_other_column():
    assert format_table(ROWS, 30).splitlines() == [
        "name        url         state",
        "----------  ----------  ------",
        "crm         https://e…  ok",
        "newsletter              paused",
    ]


def test_table_that_cannot_fit_is_printed_one_block_per_row():
    assert format_table(ROWS, 20).splitlines() == [
        "-[ 1 ]--------------",
        "name   crm",
        "url    https://exam…",
        "state  ok",
        "-[ 2 ]--------------",
        "name   newsletter",
        "url",
        "state  paused",
    ]


def _records(out: str) -> list[str]:
    """The rows of a table (one line each) or of a block layout (one block each), as text."""
    lines = out.splitlines()
    if lines and lines[0].startswith("-[ 1 ]"):
        return out.split("-[ ")[1:]
    return lines[2:]


def _webhooks(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for name in ("vip", "news"):
            conn.execute("SELECT passthrough.create_audience(%s, %s, NULL, '{}', NULL)", (name, f"crm-{name}"))
    assert cli.main(["webhooks", "create", "--name", "crm-deliveries-to-the-warehouse",
                     "--url", "http://127.0.0.1:9/hooks/passthrough/changes", "--audience", "vip",
                     "--audience", "news", "--allow-private-network", "--database-url", db_url]) == 0
    assert cli.main(["webhooks", "create", "--name", "public", "--url", "https://example.com/hook",
                     "--database-url", db_url]) == 0


@pytest.mark.parametrize("width", [80, 120, None])
def test_webhooks_list_fits_the_terminal_and_keeps_every_name(width, db_url, capsys, monkeypatch):
    _webhooks(db_url)
    capsys.readouterr()
    if width is not None:
        monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
        monkeypatch.setenv("COLUMNS", str(width))
    assert cli.main(["webhooks", "list", "--database-url", db_url]) == 0
    out = capsys.readouterr().out
    if width is not None:
        assert max(len(line) for line in out.splitlines()) <= width
    for header in ("name", "url", "audiences", "private_network", "cursor", "paused", "failures", "next_attempt_at",
                   "last_status", "last_error", "last_delivered_at", "created_at"):
        assert header in out
    records = _records(out)
    assert len(records) == 2
    crm = next(r for r in records if "crm-deliveries-to-the-warehouse" in r)
    public = next(r for r in records if "public" in r.split())
    assert "allowed" in crm and "refused" not in crm
    assert "refused" in public and "allowed" not in public


def test_webhooks_list_json(db_url, capsys):
    _webhooks(db_url)
    capsys.readouterr()
    assert cli.main(["webhooks", "list", "--json", "--database-url", db_url]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(w["name"], w["audiences"], w["allow_private_network"], w["paused"]) for w in listed] == [
        ("crm-deliveries-to-the-warehouse", ["news", "vip"], True, False),
        ("public", None, False, False),
    ]


def test_keys_and_settings_list_json(db_url, capsys):
    assert cli.main(["keys", "create", "--name", "ops", "--scope", "private", "--database-url", db_url]) == 0
    capsys.readouterr()
    assert cli.main(["keys", "list", "--json", "--database-url", db_url]) == 0
    (key,) = json.loads(capsys.readouterr().out)
    assert (key["name"], key["scope"], key["revoked_at"]) == ("ops", "private", None)
    assert cli.main(["settings", "--json", "--database-url", db_url]) == 0
    settings = {s["name"]: s["value"] for s in json.loads(capsys.readouterr().out)}
    assert settings["passthrough_enabled"] == "off"


def test_empty_lists(db_url, capsys):
    assert cli.main(["keys", "list", "--database-url", db_url]) == 0
    assert capsys.readouterr().out == "no API keys\n"
    assert cli.main(["keys", "list", "--json", "--database-url", db_url]) == 0
    assert capsys.readouterr().out == "[]\n"


def test_migrate_creates_the_data_dirs_database_and_the_other_commands_find_it(tmp_path, no_database_env, capsys):
    """The README's walkthrough: `passthrough serve` (or migrate) first, then other commands on the same data dir."""
    data_dir = str(tmp_path / "data")
    assert cli.main(["migrate", "--data-dir", data_dir]) == 0
    assert cli.main(["keys", "create", "--name", "ops", "--scope", "private", "--data-dir", data_dir]) == 0
    capsys.readouterr()
    assert cli.main(["keys", "list", "--json", "--data-dir", data_dir]) == 0
    assert [k["name"] for k in json.loads(capsys.readouterr().out)] == ["ops"]


def test_block_layout_keeps_the_identifying_value_whole():
    rows = [{"name": "a-rather-long-webhook-name", "url": "https://example.com/x", "state": "ok"}]
    assert format_table(rows, 20).splitlines() == [
        "-[ 1 ]--------------",
        "name   a-rather-long-webhook-name",
        "url    https://exam…",
        "state  ok",
    ]


def test_json_numbers_stay_exact(capsys):
    from decimal import Decimal

    from pyapp.cli.common import print_rows

    print_rows([{"ts": Decimal("1700000000.123456"), "n": Decimal("12"), "long": Decimal("0.12345678901234567890")}],
               empty="", as_json=True)
    assert json.loads(capsys.readouterr().out) == [{"ts": 1700000000.123456, "n": 12, "long": "0.12345678901234567890"}]
