"""The GraphQL facade: ``POST /v3/graphql`` (ODP's membership query) and ``GET /v3/graphql`` (GraphiQL).

Every error (errors.py) has ``message``, ``locations`` (possibly empty), ``path`` when it belongs to a field, and
``extensions.classification`` (graphql-java's names, which the SDKs read) and ``extensions.code``.
GraphQL errors are HTTP 200 (a statement past the read statement timeout too: ``TIMEOUT`` on its field);
a missing or unknown key 401 (any valid key may read), a malformed request 400/413, the database unavailable
503 with Retry-After. Every statement runs on the app's read budget (pyapp/web/database.py). A key this worker has found valid before
is checked by the request's first statement rather than by one of its own (``Context.key_gate``,
pyapp/web/auth.py): the SDKs' customer query costs one round trip. That query, when plain and its text known,
is answered in front of the framework (pyapp/web/graphql/fast.py), with the same bytes. Each distinct query
text is parsed and validated once per schema (documents.py).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from graphql import ExecutionResult, execute
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from pyapp import errors
from pyapp.jsontypes import json_type
from pyapp.web import database
from pyapp.web.auth import Scope, checked_key, key_refused
from pyapp.web.body import read_json_body
from pyapp.web.graphql.context import Context
from pyapp.web.graphql.documents import SchemaState
from pyapp.web.graphql.errors import REQUEST_ERROR, error_json, format_error
from pyapp.web.graphql.ide import GRAPHIQL_HTML, GRAPHIQL_ROUTES
from pyapp.web.graphql.limits import GraphQLLimits
from pyapp.web.graphql.plan import Plan, literal_plan
from pyapp.web.graphql.schema import CUSTOMER_SQL, IDENTIFIER_TYPES_SQL, build_schema
from pyapp.web.responses import RETRY_AFTER_SECONDS, ApiError, JSONResponse

__all__ = ["GRAPHQL_PATH", "GraphQLFacade"]

log = logging.getLogger("passthrough.graphql")

GRAPHQL_PATH = "/v3/graphql"
IDENTIFIER_TYPES_CHANNEL = "passthrough_identifier_types"
LISTENER_APPLICATION_NAME = "passthrough-graphql-listener"  # in pg_stat_activity
LISTENER_STOP_SECONDS = 0.5  # how long the listener may take to notice that the app is stopping



# raises ApiError 401/403, or returns the key hash the request's first statement must check (None: checked)
Authenticate = Callable[[Request], Awaitable[bytes | None]]
GetPool = Callable[[Request], AsyncConnectionPool]


class GraphQLFacade:
    """``POST``/``GET /v3/graphql``: mount ``routes``; call ``start(pool)`` once the app's pool is open
    and ``close()`` before it closes.

    ``get_pool(request)`` gives the pool its reads use (default: the app's read budget, pyapp/web/database.py);
    ``authenticate(request)`` raises ``ApiError`` 401/403, or returns the hash of a key the request's first
    statement must check (default: the HTTP API's ``checked_key(request, Scope.PUBLIC)``: any valid key may
    read, and a key this worker has found valid before costs no round trip of its own).
    """

    def __init__(
        self,
        get_pool: GetPool | None = None,
        authenticate: Authenticate | None = None,
        *,
        limits: GraphQLLimits | None = None,
        compiled: bool = True,
    ) -> None:
        self._get_pool = get_pool or database.get_read_pool  # every statement of the facade is a read
        self._authenticate = authenticate or _require_public_key
        self.limits = limits or GraphQLLimits()
        self.compiled = compiled  # the SDKs' query through its compiled plan (plan.py)
        self.compiled_answers = 0  # how many answers it gave (tests)
        self._state: SchemaState | None = None
        self._pool: AsyncConnectionPool | None = None
        self._reload_lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.routes = [Route(GRAPHQL_PATH, self.endpoint, methods=["GET", "POST"], name="graphql"), *GRAPHIQL_ROUTES]

    @property
    def identifier_types(self) -> tuple[str, ...] | None:
        """The identifier types the current schema was built from (None before the first build)."""
        return self._state.identifier_types if self._state else None

    # -- lifecycle

    async def start(self, pool: AsyncConnectionPool) -> None:
        """Start the listener, which builds the schema as soon as it reaches the database.

        Does not wait for the database (the app starts while it is down; requests then get 503
        until it is back). Also runs by itself on the first request if the app never called it.
        """
        self._pool = pool
        if self._listener is None:
            self._stopping = asyncio.Event()  # a restarted app may run on another event loop
            self._listener = asyncio.create_task(self._listen(), name="passthrough-graphql-identifier-types")

    async def close(self) -> None:
        # The listener is asked to stop rather than cancelled: a task cancelled while psycopg waits in
        # notifies() may wait for the server's answer to a cancel request that never comes.
        task, self._listener = self._listener, None
        if task is not None:
            self._stopping.set()
            done, _ = await asyncio.wait({task}, timeout=LISTENER_STOP_SECONDS * 3)
            if not done:
                log.warning("GraphQL identifier type listener did not stop; cancelling it")
                task.cancel()
        self._state = None
        self._reload_lock = asyncio.Lock()  # a restarted app may run on another event loop

    async def reload(self) -> None:
        """Rebuild the schema if the high-confidence identifier types changed."""
        assert self._pool is not None
        async with self._reload_lock:  # one at a time, so that a later read is never overwritten by an earlier
            async with self._pool.connection() as conn:
                cursor = await conn.execute(IDENTIFIER_TYPES_SQL)
                types = tuple(name for (name,) in await cursor.fetchall())
            if self._state is None or self._state.identifier_types != types:
                self._state = SchemaState(types, build_schema(types))
                log.info("GraphQL schema built: customer(%s)", ", ".join(types))

    async def _listen(self) -> None:
        assert self._pool is not None
        delay = 0.5
        while not self._stopping.is_set():
            try:
                kwargs = {**self._pool.kwargs, "autocommit": True, "application_name": LISTENER_APPLICATION_NAME,
                          "connect_timeout": 10}
                conn = await psycopg.AsyncConnection.connect(self._pool.conninfo, **kwargs)
                async with conn:
                    await conn.execute(f"LISTEN {IDENTIFIER_TYPES_CHANNEL}")
                    await self.reload()  # catch up with changes made while not listening
                    delay = 0.5
                    while not self._stopping.is_set():  # wakes at least every LISTENER_STOP_SECONDS
                        async for _ in conn.notifies(timeout=LISTENER_STOP_SECONDS):
                            await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is unreachable: keep the schema we have, retry
                log.warning("GraphQL identifier type listener failed; retrying in %.1fs", delay, exc_info=True)
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, 30.0)

    async def _schema_state(self, request: Request) -> SchemaState:
        if self._state is None:
            if self._listener is None:
                await self.start(self._get_pool(request))
            await self.reload()  # the listener has not got there yet; psycopg.Error when the database is down
        assert self._state is not None
        return self._state

    # -- HTTP

    async def endpoint(self, request: Request) -> Response:
        if request.method in ("GET", "HEAD"):
            return HTMLResponse(GRAPHIQL_HTML)
        request.scope[database.BUDGET_SCOPE_KEY] = database.READ  # the key's own check too (auth.py)
        try:
            key_gate = await self._authenticate(request)
            query, variables, operation_name = await self._read_request(request)
            state = await self._schema_state(request)
        except ApiError as exc:
            return _request_error(exc.report.status, exc.report.code.upper(), exc.report.message)
        except psycopg.Error as exc:  # the database is unavailable (503)
            report = errors.report(exc)
            if report.status >= 500 and report.status != 503:
                log.error("GraphQL request failed", exc_info=exc)
            return _request_error(report.status, report.code.upper(), report.message)
        plan = self.known_plan(query)  # no parsing: the JavaScript SDK's literal form, or a text seen before
        prepared = None
        if plan is None:
            prepared = state.prepare(query, self.limits)
            if prepared.document is None:
                return JSONResponse({"errors": prepared.errors})
            plan = prepared.plan if self.compiled else None
        key_pool = database.separate_key_pool(request.app) if self._get_pool is database.get_read_pool else None
        context = Context(self._get_pool(request), self.limits, key_gate=key_gate, key_pool=key_pool)
        try:
            data = None
            if plan is not None:
                data = await self.run_plan(plan, context, variables, operation_name)
            if data is not None:
                result = ExecutionResult(data)
            else:
                if prepared is None:  # known_plan found only a text that parses and validates
                    prepared = state.prepare(query, self.limits)
                result = execute(
                    state.graphql_schema,
                    prepared.document,
                    context_value=context,
                    variable_values=variables,
                    operation_name=operation_name,
                    executor_class=state.schema.execution_context_class,
                )
                if inspect.isawaitable(result):
                    result = await result
            await context.check_key()
        except psycopg.Error as exc:  # the database is unavailable (503) for the key's own check
            report = errors.report(exc)
            return _request_error(report.status, report.code.upper(), report.message)
        finally:
            await context.close()  # the connection goes back to the pool before the answer is sent
        if context.key_refused is not None:  # revoked since this worker last saw it: as if checked first
            if key_gate is not None:
                key_refused(request, key_gate, context.key_refused)
            report = errors.report(context.key_refused)
            return _request_error(report.status, report.code.upper(), report.message)
        body: dict[str, Any] = {}
        status = 200
        if result.errors:
            formatted = [format_error(e) for e in result.errors]
            body["errors"] = [f for f, _ in formatted]
            status = max(s for _, s in formatted)
        if result.data is not None or not result.errors or any(e.path for e in result.errors):
            body["data"] = result.data
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
        return JSONResponse(body, status_code=status, headers=headers)

    def known_plan(self, query: str) -> Plan | None:
        """The compiled plan of ``query`` found without parsing it: the JavaScript SDK's literal form, or a
        text prepared before. None otherwise, with compiled plans off, or before the schema is built."""
        state = self._state
        if not self.compiled or state is None:
            return None
        plan = literal_plan(query, state.identifier_types)
        if plan is None:
            prepared = state.cache.get(query)
            plan = prepared.plan if prepared is not None else None
        return plan

    async def run_plan(self, plan: Plan, context: Context, variables: dict[str, Any] | None,
                       operation_name: str | None) -> dict[str, Any] | None:
        """The query's ``data`` through its compiled plan (plan.py), or None: the executor answers
        (another variable value, or any error: the executor meets it again and reports it as always)."""
        arguments = plan.arguments(variables, operation_name)
        if arguments is None:
            return None
        try:
            rows = await context.fetchall(CUSTOMER_SQL, arguments)
        except psycopg.Error:
            return None  # a refused key is in context.key_refused; the executor is not asked then
        self.compiled_answers += 1
        return plan.data(rows)

    async def _read_request(self, request: Request) -> tuple[str, dict[str, Any] | None, str | None]:
        body = (await read_json_body(request, max_bytes=self.limits.max_body_bytes)).value
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request", f'the body must be a JSON object {{"query": ...}}, not {json_type(body)}')
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ApiError(400, "invalid_request", 'the body needs "query": a non-empty string')
        variables = body.get("variables")
        if variables is not None and not isinstance(variables, dict):
            raise ApiError(400, "invalid_request", f'"variables" must be a JSON object or null, not {json_type(variables)}')
        operation_name = body.get("operationName")
        if operation_name is not None and not isinstance(operation_name, str):
            raise ApiError(400, "invalid_request", '"operationName" must be a string or null')
        return query, variables, operation_name


async def _require_public_key(request: Request) -> bytes | None:
    """Any valid key may read. The key's hash when the request's first statement must check it (auth.py)."""
    key = await checked_key(request, Scope.PUBLIC)
    return None if key.verified else key.hash


def _request_error(status: int, code: str, message: str) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    return JSONResponse({"errors": [error_json(message, REQUEST_ERROR, code)]}, status_code=status, headers=headers)
