"""The ETL subcommands of ``passthrough``: ``load`` (bulk events), ``import`` (audience snapshots) and ``export``
(an audience's members, as the snapshot files ``import`` reads).

Registered into the main parser by ``register(sub, common)`` (pyapp/cli/parser.py); the work itself lives in
pyapp/ingest/ (writers.py, snapshot.py, export.py).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.progress import TimeRemainingColumn

from pyapp.ingest import writers
from pyapp.cli.common import CommandError, exact_decimal, open_database, plural, positive_int
from pyapp.ingest.formats import InputError


def _stderr_console() -> Console:
    return Console(stderr=True)


def _input_size(files: list[str]) -> int | None:
    import os

    total = 0
    for name in files:
        if name == "-":
            return None
        try:
            total += os.path.getsize(name)
        except OSError:
            return None
    return total


def _progress(console: Console, quiet: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:>12,} rows  {task.fields[rate]:>9,.0f} rows/s"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        refresh_per_second=8,
    )


def _load_progress(console: Console, quiet: bool) -> Progress:
    """The bar of ``passthrough load``: events the writers are done with, of the (estimated) events in the input."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed:>12,.0f} events {task.fields[verb]}  {task.fields[rate]:>9,.0f}/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
        refresh_per_second=8,
    )


def estimated_events(summary: writers.LoadSummary, bytes_read: int, total_bytes: int | None) -> int | None:
    """How many events the input holds: exact once it is all read; before, the rows read so far scaled by the
    share of the input's bytes they came from; None when unknown (stdin)."""
    if not summary.reading:
        return summary.rows
    if not total_bytes or not bytes_read or not summary.rows:
        return None
    return max(summary.rows, round(summary.rows * total_bytes / bytes_read))


def cmd_load(args: argparse.Namespace) -> int:
    for name in args.files:
        if name != "-":
            import os

            if not os.path.isfile(name):
                raise CommandError(f"{name}: no such file")
    if args.files.count("-") > 1:
        raise CommandError("- (stdin) may be given once")
    console = _stderr_console()
    verb = "checked" if args.validate_only else "applied"
    with open_database(args) as db:
        print(f"database: {db.source}", file=sys.stderr, flush=True)
        total_bytes = _input_size(args.files)
        with _load_progress(console, args.quiet) as progress:
            task = progress.add_task("validate" if args.validate_only else "load", total=None, verb=verb, rate=0.0)

            def on_progress(summary: writers.LoadSummary, read: int) -> None:
                done = summary.applied
                progress.update(task, completed=done, total=estimated_events(summary, read, total_bytes),
                                rate=done / summary.seconds if summary.seconds > 0 else 0.0)

            try:
                summary = writers.load_files(
                    db.url,
                    args.files,
                    writers=args.writers,
                    batch_size=args.batch_size,
                    fmt=args.format,
                    source=args.source,
                    rejects=args.rejects,
                    skip_other_types=args.skip_other_types,
                    on_progress=on_progress,
                    validate_only=args.validate_only,
                )
            except writers.LoadFailed as exc:
                progress.stop()
                _print_summary(exc.summary, failed=True)
                lines = [str(exc)]
                if exc.invalid:
                    lines.append("invalid rows (file:line: problems):")
                    lines.extend(f"  {item}" for item in exc.invalid)
                if args.validate_only:
                    lines.append("nothing was changed (--validate-only)")
                else:
                    lines.append(
                        f"{plural(exc.summary.batches, 'batch')} ({plural(exc.summary.accepted, 'event')}) applied "
                        "before the failure; fix the input and run the same load again (replaying events is "
                        "harmless), or use --rejects to keep invalid rows aside and apply the rest"
                    )
                raise CommandError("\n".join(lines)) from exc
            except InputError as exc:
                raise CommandError(str(exc)) from exc
            except OSError as exc:
                raise CommandError(f"cannot read input: {exc}") from exc
    if args.validate_only:
        return _print_validation(summary)
    _print_summary(summary)
    return 0


def _print_validation(summary: writers.LoadSummary) -> int:
    """``load --validate-only``'s report; 1 when a row is invalid."""
    print(f"validated: {plural(summary.rows, 'row')} read from {plural(summary.files, 'input')} in "
          f"{summary.seconds:.1f} s: {plural(summary.accepted, 'valid event')}, {summary.ignored:,} ignored, "
          f"{plural(summary.rejected, 'invalid row')}; nothing was changed", flush=True)
    if summary.invalid:
        print("invalid rows (file:line: problems):", flush=True)
        for item in summary.invalid:
            print(f"  {item}", flush=True)
        return 1
    return 0


def _print_summary(summary: writers.LoadSummary, *, failed: bool = False) -> None:
    title = "load stopped" if failed else "load done"
    print(
        f"{title}: {plural(summary.rows, 'row')} read from {plural(summary.files, 'input')} in {summary.seconds:.1f} s "
        f"({summary.rate:,.0f} rows/s); {plural(summary.accepted, 'event')} applied in "
        f"{plural(summary.batches, 'batch')}, "
        f"{plural(summary.changed, 'membership')} changed, {summary.ignored:,} ignored, {summary.rejected:,} rejected",
        flush=True,
    )
    if summary.reject_load_ids:
        ids = " ".join(map(str, sorted(summary.reject_load_ids)))
        print(f"rejected rows: passthrough rejects {ids}", flush=True)


def cmd_import(args: argparse.Namespace) -> int:
    import os

    from pyapp.ingest import snapshot
    from pyapp.db import connect

    for name in args.files:
        if not os.path.isfile(name):
            raise CommandError(f"{name}: no such file")
    if args.audience and len(args.files) != 1:
        raise CommandError("--audience names the audience of one file; give one file")
    if args.diff_limit is not None and not args.dry_run:  # else it would be ignored, its range never checked
        raise CommandError("--diff-limit: only a dry run lists a diff; add --dry-run")
    # exact, not a float, which would not be the number given; their ranges are SQL's to check (PT010)
    at = exact_decimal("--at", args.at, "a number of seconds since the Unix epoch")
    share = exact_decimal("--max-disqualify-share", args.max_disqualify_share, "a number")
    console = _stderr_console()
    failures = 0
    # files naming the same audience are one snapshot (an export writes one file per identifier type)
    groups: dict[str, list[str]] = {}
    for name in args.files:
        groups.setdefault(args.audience or snapshot.audience_id_from_path(name), []).append(name)
    with open_database(args) as db:
        print(f"database: {db.source}", file=sys.stderr, flush=True)
        for audience, names in groups.items():
            label = names[0] if len(names) == 1 else f"{audience} ({', '.join(names)})"
            total = _input_size(names)
            with _progress(console, args.quiet) as progress:
                reading = f"{audience}: read" + (" (dry run)" if args.dry_run else "")
                task = progress.add_task(reading, total=total, rows=0, rate=0.0)
                read = [0]

                def on_read(n: int) -> None:
                    read[0] += n
                    progress.update(task, completed=read[0])

                payloads, count, starts = [], 0, []  # starts: (first staged row number, file)
                try:
                    for name in names:
                        first_row = starts[-1][0] + last + 1 if starts else 0
                        payload, rows, last = snapshot.read_snapshot(name, on_read, first_row)
                        payloads.append(payload)
                        count += rows
                        starts.append((first_row, name))
                except InputError as exc:
                    raise CommandError(str(exc)) from exc
                elapsed = progress.tasks[0].elapsed or 0.0
                progress.update(task, description=f"{audience}: {'dry run' if args.dry_run else 'apply'}", rows=count,
                                rate=count / elapsed if elapsed else 0.0)
                conn = connect(db.url)
                try:
                    result = snapshot.import_rows(
                        conn, payloads, audience, at=at, max_disqualify_share=share,
                        force=args.force, dry_run=args.dry_run)
                    diff = snapshot.snapshot_diff(conn, args.diff_limit) if args.dry_run else []
                    if args.dry_run:
                        conn.rollback()
                    else:
                        conn.commit()
                except snapshot.SnapshotRefused as exc:
                    conn.rollback()
                    progress.stop()
                    failures += 1
                    _print_refusal(label, exc, starts)
                    continue
                finally:
                    conn.close()
            _print_snapshot(label, audience, result, diff)
    return 1 if failures else 0


def cmd_export(args: argparse.Namespace) -> int:
    import psycopg

    from pyapp.ingest import export
    from pyapp.db import connect
    from pyapp.errors import report

    # exact; SQL turns it into an instant (its rounding, its range: PT010)
    at = exact_decimal("--at", args.at, "a number of seconds since the Unix epoch")
    console = _stderr_console()
    with open_database(args) as db:
        print(f"database: {db.source}", file=sys.stderr, flush=True)
        with connect(db.url) as conn, _progress(console, args.quiet) as progress:
            try:
                task = progress.add_task(f"{args.segment}: export", total=None, rows=0, rate=0.0)
                done = [0]

                def on_total(n: int) -> None:
                    progress.update(task, total=n)

                def on_rows(n: int) -> None:
                    done[0] += n
                    elapsed = progress.tasks[0].elapsed or 0.0
                    progress.update(task, completed=done[0], rows=done[0], rate=done[0] / elapsed if elapsed else 0.0)

                files = export.export_audience(conn, args.segment, at, args.output, on_rows, on_total)
            except psycopg.Error as exc:
                raise CommandError(report(exc).message) from exc
    for f in files:
        print(f"{f.path}: {f.members:,} member{'' if f.members == 1 else 's'} of {args.segment} ({f.identifier_type})"
              + (f" as of {args.at} (seconds since the Unix epoch)" if at is not None else ""), flush=True)
    return 0


def _print_refusal(name: str, exc: Any, starts: list[tuple[int, str]]) -> None:
    lines = [f"error: {name}: {exc.message}"]
    for item in exc.invalid:
        first_row, path = max((s for s in starts if s[0] < item["row"]), default=starts[0])
        lines.append(f"  {path}:{item['row'] - first_row}: {item['message']}")
    if exc.detail and not exc.invalid:
        lines.append(f"detail: {exc.detail}")
    if exc.hint:
        lines.append(f"hint: {exc.hint}")
    print("\n".join(lines), file=sys.stderr, flush=True)


def _print_snapshot(name: str, audience: str, result: Any, diff: list[tuple]) -> None:
    verb = "would change" if not result.applied else "imported"
    print(
        f"{name}: {verb} audience {audience} as of {result.snapshot_at.isoformat()}: "
        f"{result.listed:,} listed; to qualify {result.to_qualify:,}, to disqualify {result.to_disqualify:,}, "
        f"unchanged {result.unchanged:,}, kept (newer events) {result.kept_newer:,}; "
        f"members before {result.members_before:,}"
        + (f"; {result.changed:,} memberships changed (batch {result.batch_id})" if result.applied else " (dry run)"),
        flush=True,
    )
    if result.refused_by:
        reasons = "; ".join(f"{guard} ({reason})" for guard, reason in zip(result.refused_by, result.refusal_reasons))
        print(f"{name}: would be refused by: {reasons}; use --force to import anyway", flush=True)
    for change, id_type, identifier, current_ts, snapshot_ts in diff:
        mark = {"qualify": "+", "disqualify": "-", "kept_newer": "="}.get(change, "?")
        when = f"current {current_ts.isoformat()}" if current_ts else "new"
        print(f"  {mark} {change:<10} {id_type}={identifier}  ({when}; snapshot {snapshot_ts.isoformat()})", flush=True)
    shown = len(diff)
    changes = result.to_qualify + result.to_disqualify + result.kept_newer
    if diff is not None and not result.applied and shown < changes:
        print(f"  ... {changes - shown:,} more (--diff-limit)", flush=True)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ETL subcommands to the ``passthrough`` parser."""
    load = sub.add_parser(
        "load",
        parents=[common],
        help="bulk-load passthrough events from files (NDJSON, JSON arrays, CSV; gzip; - for stdin)",
        description="Bulk-load passthrough events. Every row is checked by the same rules as every other "
        "path; a batch with invalid rows is refused whole (or, with --rejects, its invalid rows are kept "
        "in passthrough.load_rejects and the rest applied). A failed load can be rerun from the start.",
    )
    load.add_argument("files", nargs="+", metavar="FILE", help="input files; - reads stdin")
    load.add_argument("--format", choices=("auto", "ndjson", "json", "csv"), default="auto",
                      help="input format (default: from the file name, else from the first line)")
    load.add_argument("--writers", type=positive_int, default=writers.DEFAULT_WRITERS,
                      help="parallel writer connections (default: %(default)s)")
    load.add_argument("--batch-size", type=positive_int, default=writers.DEFAULT_BATCH_SIZE,
                      help="rows per writer transaction (default: %(default)s)")
    load.add_argument("--rejects", action="store_true",
                      help="keep invalid rows in passthrough.load_rejects and apply the rest")
    load.add_argument("--skip-other-types", action="store_true",
                      help="ignore events whose type is not passthrough instead of refusing them")
    load.add_argument("--source", default="load", help="source recorded on each batch (default: %(default)s)")
    load.add_argument("--validate-only", action="store_true",
                      help="check every row as a load would, list the invalid ones, and change nothing (exit 1 "
                      "if any is invalid)")
    load.add_argument("--quiet", action="store_true", help="no progress bar")
    load.set_defaults(func=cmd_load)

    imp = sub.add_parser(
        "import",
        parents=[common],
        help="import audience snapshots (<audience_id>.csv.gz): each replaces the audience's membership",
        description="Import full membership lists, named <audience_id>.csv.gz (or .csv); files naming the same "
        "audience (one per identifier type, as passthrough export writes them) are one snapshot. A file is a CSV "
        "with the header type, action, audience_id, ts and one identifier column. Listed identifiers are "
        "qualified; members not listed whose deciding event is older than the snapshot time are disqualified; "
        "events newer than the snapshot time stand. Each file is applied atomically.",
    )
    imp.add_argument("files", nargs="+", metavar="FILE", help="snapshot files (CSV, plain or gzip)")
    imp.add_argument("--audience", help="the audience id, when the file name does not say it (one file only)")
    imp.add_argument("--at", metavar="TS",
                     help="snapshot time T in seconds since the Unix epoch (default: the newest ts in the file)")
    imp.add_argument("--dry-run", action="store_true",
                     help="print the diff and the guards that would refuse the import, change nothing")
    # no defaults here: passthrough.import_snapshot and snapshot_diff hold them, and check the ranges
    imp.add_argument("--diff-limit", type=int, help="changes listed by --dry-run, 0 to 100000 (default: 50)")
    imp.add_argument("--max-disqualify-share", metavar="SHARE",
                     help="refuse a snapshot that disqualifies more than this share (0 to 1) of the members "
                     "(default: 0.5)")
    imp.add_argument("--force", action="store_true", help="apply an empty or over-the-share snapshot anyway")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.set_defaults(func=cmd_import)

    exp = sub.add_parser(
        "export",
        parents=[common],
        help="write a segment's members as the snapshot file passthrough import reads (<audience_id>.csv.gz)",
        description="Write the members of a segment, now or --at a past instant, as an ODP snapshot file: "
        "<audience_id>.csv.gz with the header type, action, audience_id, ts, <identifier type> and one row per "
        "member, ts being when it qualified. A snapshot file has one identifier column: members of several "
        "identifier types go to one file per type, each in a directory named after its type "
        "(fs_user_id/<audience_id>.csv.gz, ...); passthrough import takes such files together as one snapshot.",
    )
    exp.add_argument("segment", metavar="SEGMENT", help="the segment (audience) name")
    exp.add_argument("--at", metavar="TS", help="the members at this time, in seconds since the Unix epoch "
                     "(default: now)")
    exp.add_argument("-o", "--output", metavar="FILE",
                     help="the file to write (default: <audience_id>.csv.gz in the current directory)")
    exp.add_argument("--quiet", action="store_true", help="no progress bar")
    exp.set_defaults(func=cmd_export)
