"""``passthrough expire`` and ``passthrough prune``: one round of upkeep from the command line.

``passthrough serve`` runs both in the background (pyapp/workers/upkeep.py); these commands are for
deployments without it, e.g. from cron. The rules are SQL's (sql/functions/100_expiry.sql, sql/functions/240_retention.sql).
"""

from __future__ import annotations

import argparse
from typing import Any

from pyapp.cli.common import info, open_database


def cmd_expire(args: argparse.Namespace) -> int:
    from pyapp.db import connect
    from pyapp.workers.upkeep import expire_all

    with open_database(args) as db:
        info(f"database: {db.source}")
        with connect(db.url, autocommit=True) as conn:
            print(f"expired: {expire_all(conn)} memberships recorded", flush=True)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from pyapp.db import connect
    from pyapp.workers.upkeep import prune_all

    with open_database(args) as db:
        info(f"database: {db.source}")
        with connect(db.url, autocommit=True) as conn:
            retention = conn.execute("SELECT event_retention FROM passthrough.get_settings()").fetchone()[0]
            if retention is None:
                print("pruned: nothing (no event_retention set; SELECT passthrough.set_event_retention(...))")
                return 0
            events, changes, members = prune_all(conn)
            print(f"pruned: {events} events, {changes} feed changes and {members} listed identifiers of "
                  f"superseded snapshots older than {retention}", flush=True)
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    sub.add_parser(
        "expire", parents=[common], help="record the memberships whose audience ttl ran out (the expiry sweeper)",
        description="Runs passthrough.expire_memberships() until nothing is due. passthrough serve does this "
        "every few seconds; reads are right without it, the change feed shows an expiry once it ran.",
    ).set_defaults(func=cmd_expire)
    sub.add_parser(
        "prune", parents=[common], help="delete events and feed changes older than the event_retention setting",
        description="Runs passthrough.prune_history() until nothing is left to prune. passthrough serve does "
        "this every hour.",
    ).set_defaults(func=cmd_prune)
