"""The ``passthrough`` subcommands about the schema: ``migrate``, ``status``, ``enable`` and ``disable``."""

from __future__ import annotations

import argparse
from typing import Any

from pyapp.cli.common import add_json_option, info, open_database, print_rows, run_sql
from pyapp.db import connect


def cmd_migrate(args: argparse.Namespace) -> int:
    with open_database(args, create=True) as db:
        info(f"database: {db.source}")
        report_migrations(run_migrations(db.url))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from pyapp import migrate

    with open_database(args) as db:
        info(f"database: {db.source}")
        with connect(db.url) as conn:
            rows = migrate.status(conn)
        print_rows(rows, empty="no migrations known", as_json=args.json)
    return 0


def cmd_enable(args: argparse.Namespace) -> int:
    return _call_switch(args, "enable")


def cmd_disable(args: argparse.Namespace) -> int:
    return _call_switch(args, "disable")


def _call_switch(args: argparse.Namespace, what: str) -> int:
    sql = {"enable": "SELECT passthrough.enable()", "disable": "SELECT passthrough.disable()"}[what]
    run_sql(args, sql, ())
    print(f"passthrough {what}d", flush=True)
    return 0


def run_migrations(url: str) -> list[str]:
    from pyapp import migrate

    with connect(url) as conn:  # commits on clean exit, rolls back on error
        applied = migrate.migrate(conn)
    return list(applied)


def report_migrations(applied: list[str]) -> None:
    if applied:
        info(f"migrations: applied {len(applied)}: {', '.join(applied)}")
    else:
        info("migrations: up to date")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    sub.add_parser("migrate", parents=[common], help="apply pending migrations (creates the embedded database if "
                   "there is none yet)").set_defaults(func=cmd_migrate)
    status = sub.add_parser("status", parents=[common], help="list the migrations and whether each is applied")
    add_json_option(status)
    status.set_defaults(func=cmd_status)
    sub.add_parser("enable", parents=[common], help="turn passthrough on: passthrough events are applied "
                   "(SELECT passthrough.enable())").set_defaults(func=cmd_enable)
    sub.add_parser("disable", parents=[common], help="turn passthrough off: passthrough events get 403 "
                   "(SELECT passthrough.disable())").set_defaults(func=cmd_disable)
