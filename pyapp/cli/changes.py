"""``passthrough changes``: print the change feed as NDJSON, one change per line, on stdout.

    passthrough changes [--after CURSOR] [--limit N]      the changes after CURSOR (from the start), then exit
    passthrough changes --follow [--after CURSOR | --from-now]
                                                          ... then keep printing changes as they happen

Each line is a change as GET /v3/changes shows it (pyapp/feed.py: timestamps in UTC with a Z); resume
with ``--after`` the last cursor printed.
Every rule is ``passthrough.changes`` (sql/functions/210_change_feed.sql). ``--follow`` LISTENs on
``passthrough_changes``, which the writer notifies once per batch that changed something, and sleeps
until a notification arrives: no polling. Only while committed changes wait behind an older open
transaction (``passthrough.changes_pending()``) does it check again, with a growing delay, since that
transaction may end without notifying.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pyapp.cli.common import info, open_database, positive_int
from pyapp.feed import CHANGES_SQL, change_json

CHANNEL = "passthrough_changes"
PAGE = 1000


def cmd_changes(args: argparse.Namespace) -> int:
    from pyapp.db import connect

    with open_database(args) as db:
        info(f"database: {db.source}")
        with connect(db.url, autocommit=True) as conn:
            if args.follow:
                conn.execute(f"LISTEN {CHANNEL}")  # before the first read: no notification can slip between
            after = args.after
            if args.from_now:
                after = conn.execute("SELECT passthrough.current_change_cursor()").fetchone()[0]
            remaining = args.limit
            while True:
                if remaining is not None and remaining <= 0:
                    return 0
                page = PAGE if remaining is None else min(PAGE, remaining)
                rows = conn.execute(CHANGES_SQL, (after, page)).fetchall()
                for row in rows:
                    print(_line(row), flush=True)
                if rows:
                    after = rows[-1][0]
                    if remaining is not None:
                        remaining -= len(rows)
                if len(rows) == page:
                    continue  # more may be readable right away
                if not args.follow:
                    return 0
                _wait(conn)


def _wait(conn: Any) -> None:
    """Sleep until a notification, or, while changes wait behind an open transaction, a short while."""
    delay = 0.05
    while True:
        pending = conn.execute("SELECT passthrough.changes_pending()").fetchone()[0]
        timeout = delay if pending else None
        if any(True for _ in conn.notifies(timeout=timeout, stop_after=1)):
            for _ in conn.notifies(timeout=0):  # the rest that arrived meanwhile: one read covers them all
                pass
            return
        if pending:
            if not conn.execute("SELECT passthrough.changes_pending()").fetchone()[0]:
                return  # the open transaction ended: what waited is readable now
            delay = min(delay * 2, 2.0)


def _line(row: tuple[Any, ...]) -> str:
    return json.dumps(change_json(row), ensure_ascii=False)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    changes = sub.add_parser(
        "changes", parents=[common], help="print the change feed (who entered and left which audience) as NDJSON",
        description="Prints membership changes after a cursor, one JSON object per line; resume with --after "
        "the last cursor printed. With --follow, keeps printing changes as they are committed.",
    )
    changes.add_argument("--after", metavar="CURSOR", help="start after this cursor (default: the start of the feed)")
    changes.add_argument("--from-now", action="store_true", help="start at the end of the feed as readable now")
    changes.add_argument("--limit", type=positive_int, help="print at most this many changes, then exit")
    changes.add_argument("--follow", "-f", action="store_true", help="keep printing changes as they happen")
    changes.set_defaults(func=cmd_changes)
