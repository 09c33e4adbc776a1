"""The ``passthrough keys`` subcommands: create, list and revoke HTTP API keys.

Registered into the main parser by ``register(sub, common)`` (pyapp/cli/parser.py). Each is one call of the
SQL function of the same purpose (sql/functions/270_api_keys.sql), which owns every rule about keys.

``keys create`` prints the new key, and nothing else, on stdout (``KEY=$(passthrough keys create ...)``);
it is the only time the key is shown.
"""

from __future__ import annotations

import argparse
from typing import Any

from pyapp.cli.common import add_json_option, info, print_rows, run_sql


def cmd_keys_create(args: argparse.Namespace) -> int:
    (key,) = run_sql(args, "SELECT passthrough.create_api_key(%s, %s)", (args.name, args.scope))[0]
    print(key, flush=True)
    info(f"created {args.scope} API key {args.name!r}; it is shown only this once: send it as the x-api-key header")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    found = run_sql(args, "SELECT name, scope, created_at, revoked_at FROM passthrough.list_api_keys()", ())
    columns = ("name", "scope", "created_at", "revoked_at")
    print_rows([dict(zip(columns, row)) for row in found], empty="no API keys", as_json=args.json)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    run_sql(args, "SELECT passthrough.revoke_api_key(%s)", (args.name,))
    print(f"revoked API key {args.name!r}", flush=True)
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    keys = sub.add_parser("keys", help="create, list and revoke HTTP API keys")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create", parents=[common], help="create a key and print it (only this once)",
        description="A public key may read GraphQL and send events other than passthrough ones (passthrough "
        "events too once `passthrough settings set public_passthrough_events on`); it ships inside web pages, so "
        "anyone may read it. A private key may also send passthrough events, manage segments (/v3/segments), list "
        "segment members, read the change feed (/v3/changes) and import snapshots: keep it on servers.",
    )
    create.add_argument("--name", required=True, help="a name to list and revoke it by")
    create.add_argument("--scope", required=True, choices=("public", "private"),
                        help="what the key may do (see above)")
    create.set_defaults(func=cmd_keys_create)

    listing = actions.add_parser("list", parents=[common], help="list the keys: names, scopes, times (never the "
                                 "keys themselves)")
    add_json_option(listing)
    listing.set_defaults(func=cmd_keys_list)

    revoke = actions.add_parser("revoke", parents=[common], help="revoke a key: refused from the next request on")
    revoke.add_argument("name", help="the key's name")
    revoke.set_defaults(func=cmd_keys_revoke)
