"""What ``GET /metrics`` counts in the process: requests, events, batches, pool use (docs/operations.md, "Metrics").

``ServiceMetrics`` holds one app's metrics (prometheus-client); the hot paths make a counter increment or two each
(a request: one counter and one histogram observation; an events batch: three counter increments), with the
labelled children cached so that no label lookup is paid per request. With several ``passthrough serve`` workers,
prometheus-client's multiprocess mode keeps each worker's values in memory-mapped files under
``PROMETHEUS_MULTIPROC_DIR`` (pyapp/web/metrics_process.py sets it up), and a scrape, answered by any worker, adds
them up. The database's facts (webhook lag, expiry backlog, retention) are read at scrape time from
``passthrough.service_metrics()`` (pyapp/web/metrics_http.py).
"""

from __future__ import annotations

import os
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# seconds; a GraphQL read takes about a millisecond, a 500-event batch about ten
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# a client may send any method: the label takes these, any other is "other" (bounded cardinality)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of a request no route matched (a 404)

# no *_created series (each counter's start time): multiprocess mode has none either, so one process and several
# expose the same names
prometheus_client.disable_created_metrics()


def multiprocess_mode() -> bool:
    """Whether values go to the files of prometheus-client's multiprocess mode (set before any worker starts)."""
    return bool(os.environ.get(MULTIPROC_ENV))


class ServiceMetrics:
    """One app's metrics. In one process they live in ``registry``; in multiprocess mode in the shared files
    (the registry stays empty and a scrape collects the files)."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_mode()
        self.registry = CollectorRegistry()
        registry = None if self.multiprocess else self.registry
        self.requests = Counter("passthrough_http_requests", "HTTP requests answered, by route template, method "
                                "and status.", ["route", "method", "status"], registry=registry)
        self.latency = Histogram("passthrough_http_request_duration_seconds", "Time from a request's arrival to "
                                 "the end of its response, by route template.", ["route"], buckets=LATENCY_BUCKETS,
                                 registry=registry)
        self.events = Counter("passthrough_events", "Events of POST /v3/events, by outcome: accepted (stored), "
                              "ignored (acknowledged, not stored), refused (in a request refused with a 4xx for "
                              "its content).", ["outcome"], registry=registry)
        self.batches = Counter("passthrough_batches_applied", "Batches of POST /v3/events applied (committed).",
                               registry=registry)
        self.changed = Counter("passthrough_memberships_changed", "Memberships whose state the applied batches "
                               "changed.", registry=registry)
        # per worker: with several, multiprocess mode adds a pid label and drops the workers that are gone
        pool_labels: dict[str, Any] = dict(labelnames=["pool"], registry=registry, multiprocess_mode="liveall")
        self.pool_in_use = Gauge("passthrough_pool_connections_in_use", "Connections of the pool lent to a "
                                 "request or job now.", **pool_labels)
        self.pool_waiting = Gauge("passthrough_pool_requests_waiting", "Requests waiting for a connection of the "
                                  "pool now.", **pool_labels)
        self.pool_max = Gauge("passthrough_pool_connections_max", "The most connections the pool may open.",
                              **pool_labels)
        self._accepted = self.events.labels("accepted")
        self._ignored = self.events.labels("ignored")
        self._refused = self.events.labels("refused")
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request. ``route``: its template (never the raw path)."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            method_label = method if method in METHODS else "other"
            children = (self.requests.labels(route, method_label, str(status)), self.latency.labels(route))
            if len(self._request_children) < 10_000:  # route x method x status is small; a guard all the same
                self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def batch_applied(self, accepted: int, ignored: int, changed: int) -> None:
        """A batch of POST /v3/events committed, as passthrough.apply_events counted it."""
        self.batches.inc()
        self._accepted.inc(accepted)
        if ignored:
            self._ignored.inc(ignored)
        if changed:
            self.changed.inc(changed)

    def events_refused(self, count: int) -> None:
        """A request's ``count`` events refused with a 4xx for their content."""
        if count:
            self._refused.inc(count)

    def sample_pools(self, pools: dict[str, Any]) -> None:
        """Record each pool's connections in use, requests waiting and size limit (psycopg_pool's get_stats(),
        no round trip)."""
        for budget, pool in pools.items():
            stats = pool.get_stats()
            self.pool_in_use.labels(budget).set(stats.get("pool_size", 0) - stats.get("pool_available", 0))
            self.pool_waiting.labels(budget).set(stats.get("requests_waiting", 0))
            self.pool_max.labels(budget).set(stats.get("pool_max", pool.max_size))
