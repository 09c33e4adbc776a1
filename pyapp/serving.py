"""``passthrough serve``: the HTTP API under uvicorn with uvloop and httptools, in one process or in N
worker processes that share one port. The engine was chosen by measurement (docs/benchmarks.md, "Serving engine").

Each worker process builds its own app (``app_from_environment``) with its own connection pool; the pools together
stay within CONNECTION_SHARE of the server's ``max_connections`` (``pool_size_per_worker``). The background jobs
run in one worker only (pyapp/web/leader.py). Ctrl-C or SIGTERM stops taking connections, lets the requests in
flight finish (at most GRACEFUL_SECONDS), then stops every worker.

Slow clients (issue 17, item 2): each worker caps its open connections, times out request heads and stalled bodies,
and sheds the connections still sending their heads when at the cap (pyapp/web/connections.py); the default cap
stays within FILE_LIMIT_SHARE of the open-file limit, which serve raises first (``raise_open_file_limit``). The log
handler lets one of each kind of message through per LOG_REPEAT_INTERVAL seconds (pyapp/log_throttle.py). On
EMFILE, uvloop's libuv accepts and closes the pending connections with a spare descriptor (it neither spins nor
logs); asyncio's loop logs once and stops accepting for a second.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import resource
import socket
from typing import Any

from pyapp.web.connections import (
    DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, FILE_LIMIT_SHARE, ConnectionLimits,
    default_max_connections,
)

SETTINGS_ENV = "PASSTHROUGH_SERVE_SETTINGS"
CONNECTION_SHARE = 0.5  # of max_connections, for every worker's connections together
CONNECTIONS_BESIDES_POOL = 3  # per worker: the GraphQL schema's listener, the webhooks' listener, the jobs' lock
MIN_POOL_SIZE = 2  # per worker: one read and one write connection, the least of each budget (pyapp/web/database.py)
GRACEFUL_SECONDS = 30
ENGINE = {"loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
          "http": "pyapp.web.http_protocol:GuardedHttpToolsProtocol"}
# what the banner says serves the API (bench/run.py reads it from there)
ENGINE_TEXT = f"uvicorn, {ENGINE['loop']} + httptools"
LOG_REPEAT_INTERVAL = 10.0
BACKLOG = 8192  # connections the kernel queues before accept() (at most net.core.somaxconn): bursts wait, not retry


def raise_open_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (workers inherit it); the soft limit now. What
    servers commonly do: the soft limit is often 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def connection_limits(max_connections: int | str | None, header_timeout: float, body_timeout: float,
                      open_file_limit: int) -> ConnectionLimits:
    """The limits; the cap is checked against the process's open-file limit (ValueError naming the option), the
    timeouts by the command line's parser (pyapp/cli/serve.py)."""
    most = int(open_file_limit * FILE_LIMIT_SHARE)
    if max_connections is None:
        max_connections = default_max_connections(open_file_limit)
    elif not 1 <= int(max_connections) <= most:
        raise ValueError(f"--max-connections: must be between 1 and {most} ({FILE_LIMIT_SHARE:.0%} of this "
                         f"process's open-file limit, {open_file_limit}), got {max_connections}")
    return ConnectionLimits(int(max_connections), float(header_timeout), float(body_timeout))


def log_config() -> dict[str, Any]:
    """uvicorn's logging, with RepeatThrottle on the stderr handler, which asyncio's and Passthrough's loggers
    (WARNING and above, as before) now write to as well."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"repeats": {"()": "pyapp.log_throttle.RepeatThrottle", "interval": LOG_REPEAT_INTERVAL}}
    config["handlers"]["default"]["filters"] = ["repeats"]
    for name in ("asyncio", "passthrough"):
        config["loggers"][name] = {"handlers": ["default"], "level": "WARNING", "propagate": False}
    return config


def default_workers() -> int:
    """One worker per CPU this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pool_size_per_worker(max_connections: int, reserved: int, workers: int, wanted: int) -> int:
    """The largest pool (at most ``wanted``) each of ``workers`` processes may have, so that all of them,
    their connections outside the pools included, use at most CONNECTION_SHARE of the connections that
    are not reserved for superusers; at least MIN_POOL_SIZE."""
    budget = int((max_connections - reserved) * CONNECTION_SHARE) // workers - CONNECTIONS_BESIDES_POOL
    return max(MIN_POOL_SIZE, min(wanted, budget))


def max_workers(max_connections: int, reserved: int) -> int:
    """How many workers fit within CONNECTION_SHARE of the server's connections, each with a pool of
    MIN_POOL_SIZE; at least 1."""
    return max(1, int((max_connections - reserved) * CONNECTION_SHARE) // (MIN_POOL_SIZE + CONNECTIONS_BESIDES_POOL))


def sized_config(url: str, config: Any, workers: int | None) -> tuple[Any, int, str]:
    """``config`` with its pool sized for ``workers`` workers (None: one per CPU, as many as fit) on the server
    at ``url``, the number of workers, and a line saying so. ValueError when ``workers`` do not fit."""
    from pyapp.db import connect

    with connect(url, autocommit=True) as conn:
        max_connections, reserved = (int(v) for v in conn.execute(
            "SELECT current_setting('max_connections'), current_setting('superuser_reserved_connections')"
        ).fetchone())
    fit = max_workers(max_connections, reserved)
    if workers is None:
        workers = min(default_workers(), fit)
    elif workers > fit:
        raise ValueError(f"{workers} workers need at least {workers * (MIN_POOL_SIZE + CONNECTIONS_BESIDES_POOL)} connections, "
                         f"more than {CONNECTION_SHARE:.0%} of the {max_connections - reserved} the server allows "
                         f"(max_connections less superuser_reserved_connections): at most {fit} workers here")
    size = pool_size_per_worker(max_connections, reserved, workers, config.pool_max_size)
    sized = dataclasses.replace(config, pool_max_size=size, pool_min_size=min(config.pool_min_size, size))
    plural = "s" if workers != 1 else ""
    return sized, workers, (
        f"{workers} worker{plural}, a pool of at most {size} connections each ({sized.read_pool_max_size} for reads, "
        f"{sized.write_pool_max_size} for writes) "
        f"(the server allows {max_connections}; all workers together use at most {CONNECTION_SHARE:.0%} of them)")


def app_from_environment() -> Any:
    """The app of one worker process, from the settings ``serve`` put in the environment (uvicorn starts workers
    from an import string, so the settings cannot travel as arguments)."""
    from pyapp.web import ApiConfig, create_app

    from pyapp.web import connections

    settings = json.loads(os.environ[SETTINGS_ENV])
    connections.configure(ConnectionLimits(**settings["limits"]))
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in settings["config"].items()}
    # each worker's connections carry its pid in pg_stat_activity
    fields["application_name"] = f"{fields['application_name']}-{os.getpid()}"
    return create_app(settings["database_url"], config=ApiConfig(**fields))


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket on host:port, bound before anything says it serves there (as uvicorn binds it:
    SO_REUSEADDR, inherited by worker processes). OSError, e.g. EADDRINUSE, when it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(url: str, host: str, port: int, config: Any, workers: int, access_log: bool = False,
          limits: ConnectionLimits | None = None, sock: socket.socket | None = None) -> None:
    """Serve until Ctrl-C / SIGTERM. ``access_log``: a line per request on stderr (off by default: it costs
    about a sixth of a GraphQL request's time; a proxy in front usually keeps the access log). ``limits``: per
    worker (default: ConnectionLimits' defaults within the open-file limit). ``sock``: bound by bind_socket
    (default: bound here)."""
    # metrics in one process, or in serve's own directory (metrics_process.py): never in one left in the environment,
    # which prometheus-client reads when it is first imported, just below
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    import uvicorn

    from pyapp.web import connections
    from pyapp.web.metrics_process import WorkerSupervisor, multiprocess_directory

    open_file_limit = raise_open_file_limit()
    limits = limits or connection_limits(None, DEFAULT_HEADER_TIMEOUT, DEFAULT_BODY_TIMEOUT, open_file_limit)
    options: dict[str, Any] = dict(host=host, port=port, lifespan="on", log_level="info", access_log=access_log,
                                   timeout_graceful_shutdown=GRACEFUL_SECONDS, log_config=log_config(), backlog=BACKLOG,
                                   **ENGINE)
    sock = sock or bind_socket(host, port)
    try:
        if workers == 1:
            from pyapp.web import create_app

            connections.configure(limits)

            uvicorn.Server(uvicorn.Config(create_app(url, config=config), **options)).run(sockets=[sock])
            return
        os.environ[SETTINGS_ENV] = json.dumps({"database_url": url, "config": dataclasses.asdict(config),
                                               "limits": dataclasses.asdict(limits)})
        # what uvicorn.run does with workers > 1, on the socket bound already
        server_config = uvicorn.Config("pyapp.serving:app_from_environment", factory=True, workers=workers, **options)
        with multiprocess_directory():  # the workers' metrics files, added up by any worker's GET /metrics
            WorkerSupervisor(server_config, sockets=[sock]).run()
    finally:
        sock.close()
