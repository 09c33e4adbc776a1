"""The ``passthrough segments`` subcommands: what ``/v3/segments`` does, from the command line.

    passthrough segments list [--json]                      every segment, with its size and ttl
    passthrough segments get ID [--json]                    one segment (--json: as GET /v3/segments/ID shows it)
    passthrough segments create ID --external-audience-id EXT [--description TEXT] [--metadata JSON] [--ttl-seconds N]
    passthrough segments update ID --external-audience-id EXT [...] [--no-ttl]      as PUT: create or replace
    passthrough segments delete ID
    passthrough segments validate ID --external-audience-id EXT [...]               check, save nothing

Each is one call of the SQL function the HTTP route calls (pyapp/web/segments.py; sql/functions/120_audiences.sql),
which owns every rule: ids, lengths, conflicts, revisions. Registered by ``register(sub, common)``
(pyapp/cli/parser.py).
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from typing import Any

from pyapp.cli.common import CommandError, add_json_option, info, open_database, print_rows, run_sql

# the statements pyapp/web/segments.py runs (tests/test_cli_segments.py checks they stay the same)
CREATE_SQL = "SELECT passthrough.create_audience(%s, %s, %s, %s, %s)"
PUT_SQL = "SELECT passthrough.put_audience(%s, %s, %s, %s, %s, %s)"
VALIDATE_SQL = "SELECT passthrough.validate_audience(%s, %s, %s, %s, %s)"
DELETE_SQL = "SELECT passthrough.delete_audience(%s)"
DETAILS = "name, external_audience_id, description, metadata, revision, is_ready, size, created_at, updated_at, ttl"
GET_SQL = f"SELECT {DETAILS} FROM passthrough.get_audience(%s)"
LIST_SQL = f"SELECT {DETAILS} FROM passthrough.list_audiences(%s, %s)"
LIST_PAGE_SIZE = 1000  # passthrough.list_audiences allows up to 1001


def cmd_segments_list(args: argparse.Namespace) -> int:
    from pyapp.db import connect

    found: list[tuple[Any, ...]] = []
    with open_database(args) as db:
        info(f"database: {db.source}")
        with connect(db.url) as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")  # one snapshot, every page
            after = None
            while True:
                page = conn.execute(LIST_SQL, (LIST_PAGE_SIZE, after)).fetchall()
                found.extend(page)
                if len(page) < LIST_PAGE_SIZE:
                    break
                after = page[-1][0]
    if args.json:
        print_rows([_segment_json(row) for row in found], empty="[]", as_json=True)
        return 0
    print_rows([_segment_row(row) for row in found], empty="no segments", free_text=("description",))
    return 0


def cmd_segments_get(args: argparse.Namespace) -> int:
    (row,) = run_sql(args, GET_SQL, (args.segment_id,))
    if args.json:
        print(json.dumps(_segment_json(row), ensure_ascii=False, indent=2), flush=True)
        return 0
    shown = _segment_row(row) | {"metadata": json.dumps(row[3], ensure_ascii=False), "created_at": row[7]}
    print_rows([{"field": k, "value": v} for k, v in shown.items()], empty="", free_text=("value",))
    return 0


def cmd_segments_create(args: argparse.Namespace) -> int:
    (revision,) = run_sql(args, CREATE_SQL, _definition(args))[0]
    print(f"created segment {args.segment_id!r} (revision {revision})", flush=True)
    return 0


def cmd_segments_update(args: argparse.Namespace) -> int:
    if args.no_ttl and args.ttl_seconds is not None:
        raise CommandError("give --ttl-seconds N or --no-ttl, not both")
    keep_ttl = args.ttl_seconds is None and not args.no_ttl  # as a PUT body without ttl_seconds
    (revision,) = run_sql(args, PUT_SQL, (*_definition(args), keep_ttl))[0]
    print(f"saved segment {args.segment_id!r} (revision {revision})", flush=True)
    return 0


def cmd_segments_delete(args: argparse.Namespace) -> int:
    run_sql(args, DELETE_SQL, (args.segment_id,))
    print(f"deleted segment {args.segment_id!r}", flush=True)
    return 0


def cmd_segments_validate(args: argparse.Namespace) -> int:
    run_sql(args, VALIDATE_SQL, _definition(args))
    print(f"segment {args.segment_id!r} is valid (nothing saved)", flush=True)
    return 0


def _definition(args: argparse.Namespace) -> tuple[Any, ...]:
    from psycopg.types.json import Jsonb

    ttl = None if args.ttl_seconds is None else timedelta(seconds=args.ttl_seconds)
    return (args.segment_id, args.external_audience_id, args.description, Jsonb(args.metadata), ttl)


def _segment_row(row: tuple[Any, ...]) -> dict[str, Any]:
    name, external_id, description, _metadata, revision, _ready, size, _created, updated_at, ttl = row
    return {"segment_id": name, "external_audience_id": external_id, "size": size, "ttl_seconds": _seconds(ttl),
            "revision": revision, "updated_at": updated_at, "description": description}


def _segment_json(row: tuple[Any, ...]) -> dict[str, Any]:
    """GET /v3/segments/ID's body (pyapp/web/segments.py: get_segment)."""
    from pyapp.feed import iso_utc

    name, external_id, description, metadata, revision, is_ready, size, created_at, updated_at, ttl = row
    return {"segment_id": name, "revision": revision, "description": description, "metadata": metadata,
            "definition": {"external": {"external_audience_id": external_id}}, "is_ready": is_ready, "size": size,
            "ttl_seconds": _seconds(ttl), "created_at": iso_utc(created_at), "updated_at": iso_utc(updated_at)}


def _seconds(ttl: timedelta | None) -> int | None:
    return None if ttl is None else int(ttl.total_seconds())


def _json_object_text(text: str) -> Any:
    """An argparse type: JSON text (SQL checks that it is an object)."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None


def _add_definition_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("segment_id", metavar="ID", help="the segment id: 1 to 255 of a-z, 0-9 and _")
    parser.add_argument("--external-audience-id", required=True, metavar="EXT",
                        help="the CDP's audience id whose events and snapshots feed this segment")
    parser.add_argument("--description", metavar="TEXT", help="what the segment is (default: none)")
    parser.add_argument("--metadata", type=_json_object_text, default={}, metavar="JSON",
                        help="a JSON object kept with the segment (default: {})")
    parser.add_argument("--ttl-seconds", type=int, metavar="N",
                        help="how long a qualify event keeps a member (default: for ever)")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    segments = sub.add_parser("segments", help="list, show, create, update, delete and validate segments "
                              "(what /v3/segments does)")
    actions = segments.add_subparsers(dest="segments_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", parents=[common], help="list the segments with their sizes and ttls")
    add_json_option(listing)
    listing.set_defaults(func=cmd_segments_list)

    get = actions.add_parser("get", parents=[common], help="show one segment (--json: as GET /v3/segments/ID)")
    get.add_argument("segment_id", metavar="ID", help="the segment id")
    add_json_option(get)
    get.set_defaults(func=cmd_segments_get)

    create = actions.add_parser("create", parents=[common], help="create a segment (as POST /v3/segments/ID)")
    _add_definition_options(create)
    create.set_defaults(func=cmd_segments_create)

    update = actions.add_parser(
        "update", parents=[common], help="create or replace a segment (as PUT /v3/segments/ID)",
        description="Create or replace a segment, as PUT /v3/segments/ID: the definition given replaces the stored "
        "one (a description or metadata left out is cleared), except the ttl, which is kept unless --ttl-seconds "
        "or --no-ttl is given. The revision grows only when something changed.",
    )
    _add_definition_options(update)
    update.add_argument("--no-ttl", action="store_true", help="remove the ttl: members stay until disqualified")
    update.set_defaults(func=cmd_segments_update)

    delete = actions.add_parser("delete", parents=[common], help="delete a segment (as DELETE /v3/segments/ID); "
                                "its membership is kept, keyed by its external audience id")
    delete.add_argument("segment_id", metavar="ID", help="the segment id")
    delete.set_defaults(func=cmd_segments_delete)

    validate = actions.add_parser("validate", parents=[common], help="check a definition and save nothing (as "
                                  "POST /v3/segments/ID:validate)")
    _add_definition_options(validate)
    validate.set_defaults(func=cmd_segments_validate)
