"""The Starlette application: routes, error handling and the connection pool's lifespan.

``create_app(database_url)`` builds the app; ``passthrough serve`` runs it with uvicorn. The REST
routes are listed in ``api_routes()``, the one place to add endpoints; the GraphQL facade
(pyapp/web/graphql/) brings its own routes and lifecycle, and tests may pass ``extra_routes``.
Describe every route in pyapp/web/openapi/ too: tests/test_http_openapi.py and test_http_auth.py hold
each route to its documented methods, statuses and scope.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import psycopg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from pyapp import errors
from pyapp.migrate import packaged_migrations
from pyapp.web import changes, events, health, members, segment_changes, segments, snapshots
from pyapp.web.auth import KnownKeys
from pyapp.web.config import ApiConfig
from pyapp.web.console import CONSOLE_ROUTES
from pyapp.web.cors import RouteCors
from pyapp.web.database import BUDGET_SCOPE_KEY, READ, REPLICA, WRITE, Budget, make_pools
from pyapp.web.framing import RefuseAmbiguousFraming
from pyapp.web.graphql.endpoint import GraphQLFacade
from pyapp.web.graphql.fast import GraphQLFastPath
from pyapp.web.leader import Leadership
from pyapp.web.metrics import ServiceMetrics
from pyapp.web.metrics_http import PoolSampler, RequestMetrics, get_metrics
from pyapp.web.openapi.document import openapi_json
from pyapp.web.responses import ApiError, error_response
from pyapp.workers.upkeep import Upkeep
from pyapp.workers.webhooks import Webhooks

log = logging.getLogger("passthrough.http")

Endpoint = Callable[[Request], Awaitable[Response]]


def api_routes() -> list[BaseRoute]:
    """Every route of the HTTP API. Add new endpoints here (and to pyapp/web/openapi/)."""
    return [
        _route("/healthz", GET=health.healthz),
        # on the write budget: busy readers must not make a load balancer take the worker out of service
        _route("/readyz", GET=health.readyz, budget=WRITE),
        _route("/openapi.json", GET=openapi_json),
        _route("/metrics", GET=get_metrics),  # Prometheus; a private key unless the setting says not (metrics_http.py)
        _route("/v3/events", POST=events.post_events),
        # :path: an external audience id may hold "/", which arrives decoded from %2F
        _route("/v3/audiences/{audience_id:path}/snapshot", POST=snapshots.post_snapshot),
        _route("/v3/changes", GET=changes.get_changes),
        # REPLICA: on the read replica when there is one (docs/operations.md, "Read replicas")
        _route("/v3/segments", GET=segments.list_segments, budget=REPLICA),
        # before /v3/segments/{segment_id}, which would also match "name:validate"
        _route("/v3/segments/{segment_id}:validate", POST=segments.validate_segment, budget=READ),
        _route("/v3/segments/{segment_id}/members", GET=members.get_members, budget=REPLICA),
        _route("/v3/segments/{segment_id}/changes", GET=segment_changes.get_segment_changes),
        _route(
            "/v3/segments/{segment_id}",
            GET=segments.get_segment,
            POST=segments.create_segment,
            PUT=segments.put_segment,
            DELETE=segments.delete_segment,
        ),
    ]


def create_app(
    database_url: str, *, config: ApiConfig | None = None, extra_routes: Sequence[BaseRoute] = ()
) -> Starlette:
    """The HTTP API talking to ``database_url``; the pool opens when the app starts (lifespan)."""
    config = config or ApiConfig()
    # POST/GET /v3/graphql; its schema follows the identifier types
    graphql = GraphQLFacade(compiled=config.graphql_compiled)
    upkeep = Upkeep(config.expire_every, config.prune_every)  # expiry sweeper, retention pruning
    webhooks = Webhooks(config.webhook_every, timeout=config.webhook_timeout)  # the change feed, POSTed
    # once per deployment: in the worker that holds the jobs' advisory lock (leader.py)
    leadership = Leadership(database_url, [upkeep, webhooks], retry=config.leadership_retry)
    metrics = ServiceMetrics()  # GET /metrics (metrics.py)
    pool_sampler = PoolSampler(metrics)  # with several workers, each one's pool gauges for any worker's scrape

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pools = make_pools(database_url, config)  # a read budget and a write budget (database.py)
        for pool in pools.values():
            # wait=False: the app starts even when the database is down; /readyz says so, requests get 503
            await pool.open(wait=False)
        app.state.pools = pools
        app.state.pool, app.state.read_pool = pools[WRITE], pools[READ]
        # the schema's listener and the background jobs: short statements, on the write budget
        await graphql.start(pools[WRITE])
        await leadership.start(pools[WRITE])
        pool_sampler.start(pools)
        try:
            yield
        finally:
            await pool_sampler.close()
            await leadership.close()
            await graphql.close()
            for pool in pools.values():
                await pool.close()

    routes = [*api_routes(), *graphql.routes, *CONSOLE_ROUTES, *extra_routes]
    static_paths = [r.path for r in routes if isinstance(r, Route) and not r.param_convertors]
    app = Starlette(
        routes=routes,
        # every request counted (outermost); the SDKs' GraphQL query, when plain and known, is answered before
        # the rest (pyapp/web/graphql/fast.py)
        middleware=[Middleware(RequestMetrics, metrics=metrics, static_paths=static_paths),
                    Middleware(GraphQLFastPath, facade=graphql, vary_origin=bool(config.cors_origins)), Middleware(RefuseAmbiguousFraming),
                    Middleware(RouteCors, public_origins=config.cors_origins,
                               private_origins=config.cors_private_origins)],
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error,
            psycopg.Error: _database_error,
            HTTPException: _http_exception,
            ClientDisconnect: _client_disconnected,
            Exception: _unexpected_error,
        },
    )
    # "/v3/segments/" is not a path of this API: 404, as documented, rather than Starlette's 307 to "/v3/segments"
    app.router.redirect_slashes = False
    app.state.config = config
    app.state.database_url = database_url  # snapshot imports open a connection of their own (snapshots.py)
    app.state.graphql = graphql
    app.state.leadership = leadership
    app.state.metrics = metrics
    app.state.known_keys = KnownKeys()  # the keys this worker found valid (auth.py: one round trip per hot request)
    app.state.migrations = packaged_migrations()  # read once: /readyz compares the database with them
    return app


def _route(path: str, budget: Budget | None = None, **handlers: Endpoint) -> Route:
    """One route per path, dispatching on the method, so that a wrong method gets 405 with the right Allow.
    ``budget``: the connections its handlers use (database.py; None: read for GET, write for the others)."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        if budget is not None:
            request.scope[BUDGET_SCOPE_KEY] = budget
        return await handlers[method](request)

    return Route(path, endpoint, methods=list(handlers))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.report)


async def _database_error(request: Request, exc: Exception) -> Response:
    report = errors.report(exc)
    if report.status >= 500:
        log.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return error_response(report)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = {404: f"no endpoint at {request.url.path}", 405: f"{request.method} is not allowed here"}.get(
        exc.status_code, str(exc.detail)
    )
    return error_response(errors.ErrorReport(exc.status_code, code, message), headers=exc.headers)


async def _client_disconnected(request: Request, exc: Exception) -> Response:
    # nothing was stored and nobody is left to answer: one quiet line, no traceback
    log.warning("%s %s: the client disconnected before its request body had arrived", request.method,
                request.url.path)
    return Response(status_code=400)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path)
    return error_response(errors.ErrorReport(500, "internal_error", errors.INTERNAL_MESSAGE))
