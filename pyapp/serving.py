"""``passthrough serve``: the HTTP API under uvicorn with uvloop and httptools, in one process or in N
worker processes that share one port.

The engine was chosen by measurement (docs/benchmarks.md, "Serving engine"). With several workers, each
process builds its own app (``app_from_environment``: the settings travel in an environment variable,
since uvicorn starts workers from an import string), and each has its own connection pool; the pools
together stay within CONNECTION_SHARE of the server's ``max_connections`` (what superusers have reserved
aside), counting the few connections each worker keeps outside its pool. The background jobs run in one
worker only (pyapp/web/leader.py). Ctrl-C or SIGTERM stops taking connections, lets the requests in
flight finish (at most GRACEFUL_SECONDS), then stops every worker.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from typing import Any

SETTINGS_ENV = "PASSTHROUGH_SERVE_SETTINGS"
CONNECTION_SHARE = 0.5  # of max_connections, for every worker's connections together
CONNECTIONS_BESIDES_POOL = 3  # per worker: the GraphQL schema's listener, the webhooks' listener, the jobs' lock
MIN_POOL_SIZE = 2  # per worker: one read and one write connection, the least of each budget (pyapp/web/database.py)
GRACEFUL_SECONDS = 30
ENGINE = {"loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio", "http": "httptools"}


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
    """The app of one worker process, from the settings ``serve`` put in the environment."""
    from pyapp.web import ApiConfig, create_app

    settings = json.loads(os.environ[SETTINGS_ENV])
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in settings["config"].items()}
    # each worker's connections carry its pid in pg_stat_activity
    fields["application_name"] = f"{fields['application_name']}-{os.getpid()}"
    return create_app(settings["database_url"], config=ApiConfig(**fields))


def serve(url: str, host: str, port: int, config: Any, workers: int, access_log: bool = False) -> None:
    """Serve until Ctrl-C / SIGTERM. ``access_log``: a line per request on stderr (off by default: it costs
    about a sixth of a GraphQL request's time; a proxy in front usually keeps the access log)."""
    import uvicorn

    options: dict[str, Any] = dict(host=host, port=port, lifespan="on", log_level="info", access_log=access_log,
                                   timeout_graceful_shutdown=GRACEFUL_SECONDS, **ENGINE)
    if workers == 1:
        from pyapp.web import create_app

        uvicorn.Server(uvicorn.Config(create_app(url, config=config), **options)).run()
        return
    os.environ[SETTINGS_ENV] = json.dumps({"database_url": url, "config": dataclasses.asdict(config)})
    uvicorn.run("pyapp.serving:app_from_environment", factory=True, workers=workers, **options)
