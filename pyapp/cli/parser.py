"""The ``passthrough`` command: the parser, which each command group's module fills (``register``), and ``main``.

Every subcommand finds its database the same way (pyapp/cli/common.py: ``open_database``).

Exit status: 0 on success, 1 on a database or migration error, 2 on bad usage,
130 when interrupted (except ``serve``, for which Ctrl-C/SIGTERM is the normal
way to stop and exits 0).
"""

from __future__ import annotations

import argparse
import os
import signal
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyapp import __version__
from pyapp.cli import (changes, distribute, etl, keys, migrations, rejects, roles, segments, serve, settings, upkeep,
                       webhooks)
from pyapp.cli.common import DATABASE_URL_ENV, CommandError, info

DEBUG_ENV = "PASSTHROUGH_DEBUG"


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class _Parser(argparse.ArgumentParser):
    """Refuses an unknown argument in the subcommand that was given it, with that subcommand's usage (argparse
    hands unknown arguments up to the top-level parser, whose usage says nothing about them)."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def _describe_subcommands(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand without a description its one-line help as one, so that `--help` says what it does."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, subparser in action.choices.items():
                if not subparser.description and helps.get(name):
                    subparser.description = helps[name][:1].upper() + helps[name][1:] + "."
                _describe_subcommands(subparser)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url",
        metavar="URL",
        help=f"PostgreSQL URL (default: ${DATABASE_URL_ENV}; if unset, use the embedded PostgreSQL)",
    )
    common.add_argument(
        "--data-dir",
        metavar="DIR",
        type=Path,
        help="embedded PostgreSQL data dir (default: $PASSTHROUGH_DATA_DIR or ./.passthrough)",
    )

    parser = _Parser(prog="passthrough", description="Passthrough audiences service.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve.register(sub, common)
    migrations.register(sub, common)
    etl.register(sub, common)  # load, import, export
    rejects.register(sub, common)  # rejects LOAD_ID...
    settings.register(sub, common)  # settings, settings set NAME VALUE
    keys.register(sub, common)  # keys create / list / revoke
    segments.register(sub, common)  # segments list / get / create / update / delete / validate
    changes.register(sub, common)  # changes [--follow]
    roles.register(sub, common)  # roles create
    upkeep.register(sub, common)  # expire, prune
    distribute.register(sub, common)  # distribute (Citus)
    webhooks.register(sub, common)  # webhooks create / list / pause / resume / delete
    _describe_subcommands(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    installed: dict[int, Any] = {}
    if argv is None:  # only touch signal handlers when we own the process
        for sig in (signal.SIGTERM, signal.SIGHUP):
            installed[sig] = signal.signal(sig, _raise_keyboard_interrupt)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        info("interrupted")
        return 130
    except CommandError as exc:
        info(f"error: {exc}")
        return 1
    except Exception as exc:  # database errors, migration failures, ...
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        info(f"error: {_describe(exc)}")
        return 1
    finally:
        for sig, handler in installed.items():
            signal.signal(sig, handler)


def _describe(exc: BaseException) -> str:
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        psycopg = None  # type: ignore[assignment]
    if psycopg is not None and isinstance(exc, psycopg.Error):
        from pyapp.errors import describe

        return describe(exc)
    return f"{type(exc).__name__}: {exc}"
