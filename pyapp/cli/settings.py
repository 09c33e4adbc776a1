"""The ``passthrough settings`` command: list the operator settings, or change one.

    passthrough settings                          every setting, its value and what it means
    passthrough settings set NAME VALUE           e.g. passthrough settings set public_passthrough_events on

Each is one call of passthrough.list_settings() / passthrough.set_setting() (sql/functions/010_settings.sql), which own
every rule (the names, what a value may be).
"""

from __future__ import annotations

import argparse
from typing import Any

from pyapp.cli.common import add_json_option, print_rows, run_sql


def cmd_settings(args: argparse.Namespace) -> int:
    if args.settings_command == "set":
        run_sql(args, "SELECT passthrough.set_setting(%s, %s)", (args.name, args.value))
    found = run_sql(args, "SELECT name, value, description FROM passthrough.list_settings()", ())
    print_rows([dict(zip(("name", "value", "description"), row)) for row in found], empty="no settings",
               free_text=("description",), as_json=args.json)
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    settings = sub.add_parser("settings", parents=[common], help="list the operator settings, or change one")
    add_json_option(settings)
    settings.set_defaults(func=cmd_settings, settings_command=None)
    actions = settings.add_subparsers(dest="settings_command", metavar="ACTION")
    change = actions.add_parser(
        "set", parents=[common], help="change one setting, then list them all",
        description="public_passthrough_events on|off (whether public API keys, which ship inside web pages, may "
        "send passthrough events: with it on, anyone who reads the page can qualify or disqualify anyone); "
        "passthrough_enabled on|off; max_future_skew INTERVAL (e.g. '5 minutes'); event_retention INTERVAL|none.",
    )
    change.add_argument("name", help="the setting, as `passthrough settings` lists it")
    change.add_argument("value", help="on or off, an interval such as '5 minutes', or none")
    add_json_option(change)
    change.set_defaults(func=cmd_settings)
