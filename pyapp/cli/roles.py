"""The ``passthrough roles create`` command: the explicit step that creates the least-privilege roles.

One call of ``passthrough.create_roles(writer, reader)`` (sql/functions/280_roles.sql), which owns every rule:
which functions each role may execute, and that no role but the owner touches a table. Run it as the
owner of Passthrough (or a superuser), once after install and again after each upgrade; it prints the
grants in effect. Registered into the main parser by ``register(sub, common)`` (pyapp/cli/parser.py).
"""

from __future__ import annotations

import argparse
from typing import Any

from pyapp.cli.common import add_json_option, info, print_rows, run_sql

DEFAULT_WRITER = "passthrough_writer"
DEFAULT_READER = "passthrough_reader"


def cmd_roles_create(args: argparse.Namespace) -> int:
    found = run_sql(
        args, "SELECT role, function_name FROM passthrough.create_roles(%s, %s)", (args.writer, args.reader)
    )
    print_rows([{"role": role, "may execute": fn} for role, fn in found], empty="no grants", as_json=args.json)
    (info if args.json else print)(  # --json: stdout is the JSON alone
        f"roles {args.writer} and {args.reader} are ready: grant them to login roles, e.g. "
        f"GRANT {args.writer} TO etl_job;"
    )
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    roles = sub.add_parser("roles", help="create the least-privilege database roles (writer, reader)")
    actions = roles.add_subparsers(dest="roles_command", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        parents=[common],
        help="create (if missing) the writer and reader roles and grant exactly what each needs",
        description="Run as the owner of Passthrough (or a superuser); CREATE ROLE needs CREATEROLE. "
        "Idempotent: run it again after each upgrade. See docs/dba.md, Roles and grants.",
    )
    create.add_argument("--writer", default=DEFAULT_WRITER, help="writer role name (default: %(default)s)")
    create.add_argument("--reader", default=DEFAULT_READER, help="reader role name (default: %(default)s)")
    add_json_option(create)
    create.set_defaults(func=cmd_roles_create)
