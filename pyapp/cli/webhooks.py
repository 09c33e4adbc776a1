"""The ``passthrough webhooks`` subcommands: create, list, pause, resume and delete webhook subscriptions.

Registered into the main parser by ``register(sub, common)`` (pyapp/cli/parser.py). Each is one call of the
SQL function of the same purpose (sql/functions/250_webhooks.sql), which owns every rule about webhooks;
``passthrough serve`` delivers them (pyapp/workers/webhooks.py).

``webhooks create`` prints the new webhook's signing secret, and nothing else, on stdout
(``SECRET=$(passthrough webhooks create ...)``); it is the only time the secret is shown.
"""

from __future__ import annotations

import argparse
from typing import Any

from pyapp.cli.common import add_json_option, info, print_rows, run_sql

LIST_COLUMNS = ("name", "url", "audiences", "allow_private_network", "cursor", "paused", "failures", "next_attempt_at",
                "last_status", "last_error", "last_delivered_at", "created_at")
LIST_HEADERS = {"allow_private_network": "private_network"}  # narrower: the table has many columns


def cmd_webhooks_create(args: argparse.Namespace) -> int:
    (secret,) = run_sql(args, "SELECT passthrough.create_webhook(%s, %s, %s, %s, %s)",
                        (args.name, args.url, args.audience or None, not args.from_start, args.allow_private_network))[0]
    print(secret, flush=True)
    info(f"created webhook {args.name!r} -> {args.url}; its signing secret is shown only this once "
          f"(deliveries start {'at the start of the feed' if args.from_start else 'with the changes from now on'}, "
          "sent by passthrough serve)")
    return 0


def cmd_webhooks_list(args: argparse.Namespace) -> int:
    found = run_sql(args, f"SELECT {', '.join(LIST_COLUMNS)} FROM passthrough.list_webhooks()", ())
    records = [dict(zip(LIST_COLUMNS, row)) for row in found]
    if args.json:
        print_rows(records, empty="no webhooks", as_json=True)
        return 0
    rows = []
    for record in records:
        record["audiences"] = "(all)" if record["audiences"] is None else ", ".join(record["audiences"])
        record["allow_private_network"] = "allowed" if record["allow_private_network"] else "refused"
        rows.append({LIST_HEADERS.get(k, k): v for k, v in record.items()})
    print_rows(rows, empty="no webhooks", free_text=("url", "audiences", "last_error"))
    return 0


def cmd_webhooks_pause(args: argparse.Namespace) -> int:
    run_sql(args, "SELECT passthrough.pause_webhook(%s)", (args.name,))
    print(f"paused webhook {args.name!r}", flush=True)
    return 0


def cmd_webhooks_resume(args: argparse.Namespace) -> int:
    run_sql(args, "SELECT passthrough.resume_webhook(%s, %s)", (args.name, args.from_now))
    print(f"resumed webhook {args.name!r}" + (" from now on" if args.from_now else ""), flush=True)
    return 0


def cmd_webhooks_delete(args: argparse.Namespace) -> int:
    run_sql(args, "SELECT passthrough.delete_webhook(%s)", (args.name,))
    print(f"deleted webhook {args.name!r}", flush=True)
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    hooks = sub.add_parser("webhooks", help="create, list, pause, resume and delete webhooks (the change feed, POSTed)")
    actions = hooks.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create", parents=[common], help="subscribe a URL to the change feed and print its signing secret (only this once)",
        description="passthrough serve POSTs the changes to the URL, at least once, in feed order, signed with the "
        "secret (README.md, Webhooks).",
    )
    create.add_argument("--name", required=True, help="a name to list and delete it by")
    create.add_argument("--url", required=True, help="the http:// or https:// URL to POST to")
    create.add_argument("--audience", action="append", metavar="NAME",
                        help="deliver only this audience's changes (repeat for several; default: every audience)")
    create.add_argument("--from-start", action="store_true",
                        help="deliver the whole feed from its start (default: the changes from now on)")
    create.add_argument("--allow-private-network", action="store_true",
                        help="let deliveries reach loopback, link-local, private and other non-global addresses "
                        "(default: refused, whatever the host name resolves to; for a receiver on this host or network)")
    create.set_defaults(func=cmd_webhooks_create)

    listing = actions.add_parser("list", parents=[common],
                                 help="list webhooks and their delivery state (never the secrets)")
    add_json_option(listing)
    listing.set_defaults(func=cmd_webhooks_list)

    pause = actions.add_parser("pause", parents=[common], help="stop delivering to a webhook, keeping its cursor")
    pause.add_argument("name", help="the webhook's name")
    pause.set_defaults(func=cmd_webhooks_pause)

    resume = actions.add_parser("resume", parents=[common],
                                help="deliver to a paused or failing webhook again, now")
    resume.add_argument("name", help="the webhook's name")
    resume.add_argument("--from-now", action="store_true",
                        help="skip to the end of the feed (e.g. after its cursor was pruned)")
    resume.set_defaults(func=cmd_webhooks_resume)

    delete = actions.add_parser("delete", parents=[common], help="delete a webhook: nothing more is delivered")
    delete.add_argument("name", help="the webhook's name")
    delete.set_defaults(func=cmd_webhooks_delete)
