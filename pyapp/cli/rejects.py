"""``passthrough rejects LOAD_ID...``: the rows a ``passthrough load --rejects`` kept aside, with their problems.

One call of passthrough.get_load_rejects per load id (sql/functions/170_bulk_load.sql); printed as every list
command prints (pyapp/cli/common.py: print_rows). Registered by ``register(sub, common)`` (pyapp/cli/parser.py).
"""

from __future__ import annotations

import argparse
from typing import Any

from pyapp.cli.common import add_json_option, positive_int, print_rows, run_sql

COLUMNS = ("load_id", "row_no", "problems", "type", "action", "identifier_type", "identifier", "audience_id", "ts",
           "idempotence_id", "source", "rejected_at")
REJECTS_SQL = (f"SELECT l.load_id, {', '.join('r.' + c for c in COLUMNS[1:])}"
               " FROM unnest(%s::bigint[]) AS l(load_id), passthrough.get_load_rejects(l.load_id) AS r"
               " ORDER BY l.load_id, r.row_no")


def cmd_rejects(args: argparse.Namespace) -> int:
    rows = [dict(zip(COLUMNS, row)) for row in run_sql(args, REJECTS_SQL, (args.load_ids,))]
    if not args.json:
        for row in rows:
            row["problems"] = "; ".join(row["problems"])
    print_rows(rows, empty=f"no rejected rows for load {', '.join(map(str, args.load_ids))}", as_json=args.json,
               free_text=("problems", "identifier", "idempotence_id"))
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    rejects = sub.add_parser(
        "rejects", parents=[common], help="print the rows a load with --rejects kept aside",
        description="Prints the rows that passthrough load --rejects did not apply, with their problems, from "
        "passthrough.get_load_rejects(LOAD_ID); the load prints its LOAD_IDs. row_no is the row's line, for a "
        "load of one input (counted across the inputs otherwise).",
    )
    rejects.add_argument("load_ids", nargs="+", type=positive_int, metavar="LOAD_ID", help="what the load printed")
    add_json_option(rejects)
    rejects.set_defaults(func=cmd_rejects)
