"""``GET /metrics`` in the Prometheus text format, and the middleware that counts every request.

``RequestMetrics`` wraps the whole app (the GraphQL fast path included): one counter increment and one histogram
observation per request, labelled with the matched route's template (``scope["route"]``, set by Starlette's
router), the path itself for a route without parameters that a middleware answered (the GraphQL fast path), or
"unmatched": never a raw path. ``get_metrics`` asks the key the app's setting says (``ApiConfig.metrics_key_required``:
``passthrough serve --metrics-auth``), then reads ``passthrough.service_metrics()`` (one statement, read budget) and
writes the process's metrics (or, with several workers, every worker's) with the database's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from contextlib import suppress
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pyapp.web.auth import Scope as KeyScope
from pyapp.web.auth import require_scope
from pyapp.web.database import read
from pyapp.web.metrics import UNMATCHED, ServiceMetrics

log = logging.getLogger("passthrough.metrics")

SERVICE_METRICS_SQL = "SELECT metric, webhook, value FROM passthrough.service_metrics()"
POOL_SAMPLE_SECONDS = 1.0  # with several workers: how often each writes its pools' gauges for any worker's scrape
# passthrough.service_metrics()'s rows: metric name -> (exposed name, help)
DATABASE_METRICS = {
    "webhook_lag_seconds": ("passthrough_webhook_lag_seconds", "Seconds the webhook's first undelivered change "
                            "(by its audience filter) has been in the feed; 0 when it is caught up."),
    "expiry_backlog": ("passthrough_expiry_backlog", "Memberships whose audience ttl ran out that the expiry "
                       "sweeper has not recorded yet."),
    "retention_last_success_age_seconds": ("passthrough_retention_last_success_age_seconds", "Seconds since "
                                           "retention pruning last finished a run (absent: never)."),
}


class RequestMetrics:
    """Counts each HTTP request by route template, method and status, and observes its latency."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, static_paths: Iterable[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.static_paths = frozenset(static_paths)  # route paths without parameters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception the server answers itself

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            if route is not None:
                template = route.path
            else:
                template = scope["path"] if scope["path"] in self.static_paths else UNMATCHED
            self.metrics.request(template, scope["method"], status, time.perf_counter() - started)


async def get_metrics(request: Request) -> Response:
    metrics: ServiceMetrics = request.app.state.metrics
    if request.app.state.config.metrics_key_required:
        await require_scope(request, KeyScope.PRIVATE)
    database = await _database_metrics(request)
    metrics.sample_pools(request.app.state.pools)
    if metrics.multiprocess:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        text = generate_latest(metrics.registry)
    return Response(text + generate_latest(_Collected(database)), headers={"content-type": CONTENT_TYPE_LATEST})


async def _database_metrics(request: Request) -> list[Metric]:
    """passthrough.service_metrics()'s samples, and passthrough_service_metrics_up: 0 (and no samples) when the
    database could not answer, so that the process's metrics are still scraped while it is down."""
    up = GaugeMetricFamily("passthrough_service_metrics_up", "1 when this scrape read the database's metrics "
                           "(passthrough.service_metrics()), 0 when the database did not answer.")

    async def fetch(conn: Any) -> list[tuple[str, str | None, float | None]]:
        cursor = await conn.execute(SERVICE_METRICS_SQL)
        return await cursor.fetchall()

    try:
        rows = await read(request, fetch)
    except Exception as exc:  # the database is down or busy: say so in the metrics, answer all the same
        log.warning("GET /metrics: passthrough.service_metrics() failed: %s: %s", type(exc).__name__, exc)
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    families = {name: GaugeMetricFamily(exposed, help_text, labels=["webhook"] if name == "webhook_lag_seconds"
                                        else None) for name, (exposed, help_text) in DATABASE_METRICS.items()}
    for name, webhook, value in rows:
        family = families.get(name)
        if family is None or value is None:  # a metric this server does not know yet; never run
            continue
        family.add_metric([webhook] if webhook is not None else [], value)
    return [up, *families.values()]


class _Collected:
    """A collector of metrics read already (generate_latest takes anything with collect())."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


class PoolSampler:
    """With several workers: writes this worker's pool gauges every POOL_SAMPLE_SECONDS, so that a scrape
    answered by another worker sees them (no round trip: psycopg_pool's own counters)."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics
        self._task: asyncio.Task[None] | None = None

    def start(self, pools: dict[str, Any]) -> None:
        if self.metrics.multiprocess:
            self._task = asyncio.get_running_loop().create_task(self._run(pools), name="passthrough-pool-metrics")

    async def _run(self, pools: dict[str, Any]) -> None:
        while True:
            self.metrics.sample_pools(pools)
            await asyncio.sleep(POOL_SAMPLE_SECONDS)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
