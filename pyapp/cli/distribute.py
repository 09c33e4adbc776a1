"""The ``passthrough distribute`` command: turn the schema on a Citus coordinator into a distributed one.

One call of ``passthrough.distribute()`` (sql/functions/290_distribute.sql), which owns every rule: which
tables are distributed by identifier, which become reference tables, which stay on the coordinator.
Run it as the owner of Passthrough, on the coordinator, after ``passthrough migrate``; it is idempotent.
docs/scale-out.md (Citus) says how to get there.
"""

from __future__ import annotations

import argparse
from typing import Any

from pyapp.cli.common import add_json_option, print_rows, run_sql


def cmd_distribute(args: argparse.Namespace) -> int:
    found = run_sql(args, "SELECT table_name, placement, action FROM passthrough.distribute()", ())
    print_rows([{"table": table, "placement": placement, "action": action} for table, placement, action in found],
               empty="no tables", as_json=args.json)
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    distribute = sub.add_parser(
        "distribute", parents=[common],
        help="distribute the schema over a Citus cluster (run on the coordinator; idempotent)",
        description="Runs passthrough.distribute() on the coordinator of a Citus cluster: membership, the event "
        "log and expiries are distributed by identifier, the small shared tables become reference tables, the "
        "change feed stays on the coordinator. Run it as the owner of Passthrough after `passthrough migrate`. "
        "See docs/scale-out.md, Citus.",
    )
    add_json_option(distribute)
    distribute.set_defaults(func=cmd_distribute)
