"""``passthrough serve``: migrate, then serve the HTTP API until Ctrl-C / SIGTERM (pyapp/serving.py)."""

from __future__ import annotations

import argparse
import errno
import os
from typing import Any

from pyapp.cli.common import CommandError, info, open_database, positive_int
from pyapp.cli.migrations import report_migrations, run_migrations
from pyapp.serving import default_workers
from pyapp.web.config import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_EVENTS, DEFAULT_MAX_SNAPSHOT_BYTES
from pyapp.web.config import DEFAULT_MAX_SNAPSHOT_UPLOADS, DEFAULT_READ_STATEMENT_TIMEOUT
from pyapp.web.connections import (
    DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, FILE_LIMIT_SHARE, default_max_connections,
)
from pyapp.web.metrics_auth import METRICS_AUTH_CHOICES


def cmd_serve(args: argparse.Namespace) -> int:
    with open_database(args, create=True) as db:
        if args.no_migrate:
            info("migrations: skipped (--no-migrate)")
        else:
            report_migrations(run_migrations(db.url))
        print(f"database:     {db.source}", flush=True)
        print(f"database URL: {db.url}", flush=True)
        print(f"psql:         {db.psql_command}", flush=True)
        try:
            serve_forever(db.url, args.host, args.port, max_events=args.max_events, max_body_bytes=args.max_body_bytes,
                          max_snapshot_bytes=args.max_snapshot_bytes, cors_origins=_origins(args.cors_origins),
                          cors_private_origins=_origins(args.cors_private_origins), workers=args.workers,
                          access_log=args.access_log, max_snapshot_uploads=args.max_snapshot_uploads,
                          read_statement_timeout=args.read_statement_timeout, metrics_auth=args.metrics_auth,
                          connections=(args.max_connections, args.header_timeout, args.body_timeout),
                          read_database_url=args.read_database_url or None)
        except KeyboardInterrupt:
            info("shutting down")
    return 0


def _port(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port from 1 to 65535, got {text!r}")
    return value


def _metrics_auth(text: str) -> str:
    """An argparse type (also applied to $PASSTHROUGH_METRICS_AUTH): auto, key or none."""
    if text not in METRICS_AUTH_CHOICES:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(METRICS_AUTH_CHOICES)}, got {text!r}")
    return text


def _origins(text: str) -> tuple[str, ...]:
    """A comma-separated list of CORS origins (empty: none)."""
    return tuple(o.strip() for o in text.split(",") if o.strip())


def serve_forever(url: str, host: str, port: int, *, max_events: int, max_body_bytes: int,
                  max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES, cors_origins: tuple[str, ...] = ("*",),
                  cors_private_origins: tuple[str, ...] = (), workers: int | None = 1,
                  access_log: bool = False, max_snapshot_uploads: int = DEFAULT_MAX_SNAPSHOT_UPLOADS,
                  read_statement_timeout: float = DEFAULT_READ_STATEMENT_TIMEOUT,
                  connections: tuple[Any, float, float] = (None, 10.0, 20.0), metrics_auth: str = "auto",
                  read_database_url: str | None = None) -> None:
    """Serve the HTTP API (pyapp/web) on host:port until Ctrl-C / SIGTERM (pyapp/serving.py). ``connections``:
    --max-connections, --header-timeout, --body-timeout; ``metrics_auth``: --metrics-auth. ``read_database_url``:
    a streaming replica for the reads that may lag (docs/operations.md, "Read replicas")."""
    from pyapp import serving
    from pyapp.web import ApiConfig
    from pyapp.web.metrics_auth import metrics_key_required

    if read_database_url:
        info(f"reads:        {_replica_line(read_database_url)}")
    config = ApiConfig(max_events=max_events, max_body_bytes=max_body_bytes, max_snapshot_bytes=max_snapshot_bytes,
                       cors_origins=cors_origins, cors_private_origins=cors_private_origins,
                       max_snapshot_uploads=max_snapshot_uploads, read_statement_timeout=read_statement_timeout,
                       read_database_url=read_database_url,
                       metrics_key_required=metrics_key_required(metrics_auth, host))
    try:
        config, workers, sizing = serving.sized_config(url, config, workers)
    except ValueError as exc:
        raise CommandError(f"--workers: {exc}") from None
    try:
        limits = serving.connection_limits(*connections, serving.raise_open_file_limit())
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    try:
        sock = serving.bind_socket(host, port)
    except OSError as exc:
        reason = "the port is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise CommandError(f"cannot listen on {host}:{port}: {reason}") from None
    metrics = "a private key" if config.metrics_key_required else "no key"
    info(f"HTTP API on http://{host}:{port} (OpenAPI: /openapi.json; metrics: /metrics, {metrics}): "
         f"{serving.ENGINE_TEXT}, {sizing}; press Ctrl-C to stop")
    serving.serve(url, host, port, config, workers, access_log, limits, sock)


def _replica_line(url: str) -> str:
    """What serve says about the read replica at ``url``; CommandError when it cannot be reached at all."""
    from pyapp.db import connect

    try:
        with connect(url, autocommit=True) as conn:
            in_recovery = conn.execute("SELECT pg_catalog.pg_is_in_recovery()").fetchone()[0]
    except Exception as exc:
        raise CommandError(f"--read-database-url: cannot connect: {str(exc).strip()}") from None
    if not in_recovery:
        return "GraphQL, segment listings and member pages on --read-database-url (not a standby: no replay lag)"
    return "GraphQL, segment listings and member pages on the streaming replica at --read-database-url"


def _timeout(text: str) -> float:
    """An argparse type: seconds, more than 0 and at most 3600."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600 seconds, got {text!r}")
    return value


def _add_connection_options(parser: Any, env: Any) -> None:
    """``serve``'s options for slow clients (pyapp/web/connections.py)."""
    parser.add_argument("--max-connections", type=positive_int, default=env("PASSTHROUGH_MAX_CONNECTIONS"),
                        help="open connections per worker process; at the cap, those still sending their request "
                        f"heads are dropped, oldest first (default: $PASSTHROUGH_MAX_CONNECTIONS, else "
                        f"{default_max_connections(1 << 30)} or {FILE_LIMIT_SHARE * 100:.0f}%% of the open-file limit if "
                        "lower)")
    parser.add_argument("--header-timeout", type=_timeout,
                        default=env("PASSTHROUGH_HEADER_TIMEOUT", str(DEFAULT_HEADER_TIMEOUT)),
                        help="seconds a request head may take, from the connection's opening or the previous "
                        f"response (default: $PASSTHROUGH_HEADER_TIMEOUT or {DEFAULT_HEADER_TIMEOUT:g})")
    parser.add_argument("--body-timeout", type=_timeout,
                        default=env("PASSTHROUGH_BODY_TIMEOUT", str(DEFAULT_BODY_TIMEOUT)),
                        help="seconds a request body may go without receiving anything before it is dropped "
                        f"(default: $PASSTHROUGH_BODY_TIMEOUT or {DEFAULT_BODY_TIMEOUT:g})")



def register(sub: Any, common: argparse.ArgumentParser) -> None:
    serve = sub.add_parser("serve", parents=[common], help="migrate (creating the embedded database if there is none yet), then serve the HTTP API until Ctrl-C")
    env = os.environ.get
    serve.add_argument("--host", default=env("PASSTHROUGH_HOST", "127.0.0.1"),
                       help="HTTP listen address (default: $PASSTHROUGH_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=env("PASSTHROUGH_PORT", "8080"),
                       help="HTTP listen port (default: $PASSTHROUGH_PORT or 8080)")
    serve.add_argument("--no-migrate", action="store_true", help="do not apply pending migrations on start")
    serve.add_argument("--access-log", action="store_true", default=env("PASSTHROUGH_ACCESS_LOG", "") == "1",
                       help="log a line per request (default: $PASSTHROUGH_ACCESS_LOG=1, else off)")
    serve.add_argument("--workers", type=positive_int, default=env("PASSTHROUGH_WORKERS"),
                       help="server processes sharing the port (default: $PASSTHROUGH_WORKERS, else one per CPU, "
                       f"here {default_workers()}, as many as half of the server's max_connections allows)")
    serve.add_argument("--max-events", type=int, default=env("PASSTHROUGH_MAX_EVENTS", str(DEFAULT_MAX_EVENTS)),
                       help=f"events per POST /v3/events (default: $PASSTHROUGH_MAX_EVENTS or {DEFAULT_MAX_EVENTS})")
    serve.add_argument("--max-body-bytes", type=int,
                       default=env("PASSTHROUGH_MAX_BODY_BYTES", str(DEFAULT_MAX_BODY_BYTES)),
                       help="request body limit, before and after gzip decompression "
                       f"(default: $PASSTHROUGH_MAX_BODY_BYTES or {DEFAULT_MAX_BODY_BYTES})")
    serve.add_argument("--max-snapshot-bytes", type=int,
                       default=env("PASSTHROUGH_MAX_SNAPSHOT_BYTES", str(DEFAULT_MAX_SNAPSHOT_BYTES)),
                       help="snapshot upload limit (POST /v3/audiences/{id}/snapshot), before and after gzip "
                       f"decompression (default: $PASSTHROUGH_MAX_SNAPSHOT_BYTES or {DEFAULT_MAX_SNAPSHOT_BYTES})")
    serve.add_argument("--max-snapshot-uploads", type=positive_int,
                       default=env("PASSTHROUGH_MAX_SNAPSHOT_UPLOADS", str(DEFAULT_MAX_SNAPSHOT_UPLOADS)),
                       help="snapshot uploads each server process takes at once; more are 503 (default: "
                       f"$PASSTHROUGH_MAX_SNAPSHOT_UPLOADS or {DEFAULT_MAX_SNAPSHOT_UPLOADS})")
    serve.add_argument("--cors-origins", default=env("PASSTHROUGH_CORS_ORIGINS", "*"), metavar="ORIGINS",
                       help="comma-separated origins whose web pages may call POST /v3/events and /v3/graphql, or * "
                       "for any (default: $PASSTHROUGH_CORS_ORIGINS or *); empty: none")
    serve.add_argument("--cors-private-origins", default=env("PASSTHROUGH_CORS_PRIVATE_ORIGINS", ""),
                       metavar="ORIGINS", help="origins whose pages may call the routes that need a private key "
                       "(default: $PASSTHROUGH_CORS_PRIVATE_ORIGINS or none); a private key in a web page is public")
    serve.add_argument("--read-statement-timeout", type=float, metavar="SECONDS",
                       default=env("PASSTHROUGH_READ_STATEMENT_TIMEOUT", str(DEFAULT_READ_STATEMENT_TIMEOUT)),
                       help="longest statement of an API read (GraphQL, member listings, changes), then 503 "
                       f"statement_timeout / GraphQL TIMEOUT; 0: none (default: $PASSTHROUGH_READ_STATEMENT_TIMEOUT "
                       f"or {DEFAULT_READ_STATEMENT_TIMEOUT:g})")
    serve.add_argument("--read-database-url", metavar="URL", default=env("PASSTHROUGH_READ_DATABASE_URL"),
                       help="a streaming replica of the database: GraphQL, GET /v3/segments and member pages read "
                       "there (API keys are still checked on the primary); everything else stays on the primary "
                       "(default: $PASSTHROUGH_READ_DATABASE_URL, else none)")
    serve.add_argument("--metrics-auth", type=_metrics_auth, metavar="{auto,key,none}", default=env("PASSTHROUGH_METRICS_AUTH", "auto"),
                       help="whether GET /metrics needs a private key: auto (none while --host is a loopback address, "
                       "else a private key), key, none (default: $PASSTHROUGH_METRICS_AUTH or auto)")
    _add_connection_options(serve, env)
    serve.set_defaults(func=cmd_serve)
