"""The GraphQL facade: ``POST /v3/graphql`` (ODP's membership query) and ``GET /v3/graphql`` (GraphiQL).

Schema (built with Strawberry from the database)::

    type Query {
      customer(fs_user_id: String, vuid: String, ...one per identifier type): Customer
      audiences(first: Int, after: String): AudienceConnection!
      size_history(audience: String!, from: Float!, to: Float!, bucket: String = "hour"): [SizeBucket!]!
    }
    type Customer { audiences(subset: [String], at: Float): AudienceConnection! }
    type SizeBucket { start: Float!  end: Float!  size_at_start: Int!  entered: Int!  exited: Int!  size_at_end: Int! }
    type AudienceConnection { edges: [AudienceEdge!]!  pageInfo: PageInfo! }
    type AudienceEdge { node: Audience!  cursor: String! }
    type Audience { name: String!  state: String  description: String  is_ready: Boolean!  revision: Int!  size: Int! }
    type PageInfo { hasNextPage: Boolean!  endCursor: String }

Arguments are nullable (``String``, ``[String]``) because the Optimizely SDKs declare their variables
that way. ``customer`` takes exactly one non-null identifier argument. ``Customer.audiences`` is
non-null, so an error reading it (say an invalid identifier) makes ``customer`` null, as ODP
answers. Resolvers hold no membership rule: ``Customer.audiences`` is one call of
``passthrough.customer_audiences`` (``customer_audiences_at`` with ``at``), ``Query.audiences`` one call of
``passthrough.list_audiences`` and ``size_history`` one of ``passthrough.audience_size_history``;
every error SQL raises is mapped by ``pyapp.errors``.

The ``customer`` arguments follow ``passthrough.list_identifier_types()``: the schema is built when
the facade starts and rebuilt when a ``NOTIFY passthrough_identifier_types`` arrives (a dedicated
connection LISTENs; after a lost connection it reconnects and reloads), so no restart is needed.

Every error has ``message``, ``locations`` (possibly empty), ``path`` when it belongs to a field, and
``extensions.classification`` (graphql-java's names, which the SDKs read) and ``extensions.code``.
GraphQL errors are HTTP 200 (a statement past the read statement timeout too: ``TIMEOUT`` on its field);
a missing or unknown key 401 (any valid key may read), a malformed request 400/413, the database unavailable
503 with Retry-After. Every statement runs on the app's read budget (pyapp/web/database.py). A key this worker has found valid before
is checked by the request's first statement rather than by one of its own (``Context.key_gate``,
pyapp/web/auth.py): the SDKs' customer query costs one round trip. That query, when plain and its text known,
is answered in front of the framework (pyapp/web/graphql_fast.py), with the same bytes.

Each distinct query text is parsed, measured against ``GraphQLLimits`` and validated once per
schema; the outcome is kept in an LRU cache.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import logging
from datetime import datetime, timedelta
from decimal import Decimal
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import psycopg
import strawberry
from graphql import DocumentNode, ExecutionResult, GraphQLError, GraphQLSchema, execute, parse, validate
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from strawberry.schema.config import StrawberryConfig

from pyapp import epoch, errors
from pyapp.web import database
from pyapp.web.auth import GATE_SQL, KEY_REFUSED_SQLSTATES, Scope, checked_key, key_refused
from pyapp.jsontypes import json_type
from pyapp.web.body import read_json_body
from pyapp.web.graphql_ide import GRAPHIQL_HTML, GRAPHIQL_ROUTES
from pyapp.web.graphql_limits import GraphQLLimits, check_limits
from pyapp.web.graphql_plan import Plan, compile_plan, literal_plan
from pyapp.web.responses import RETRY_AFTER_SECONDS, ApiError, JSONResponse

__all__ = ["GRAPHQL_PATH", "GraphQLFacade", "GraphQLLimits", "build_schema"]

log = logging.getLogger("passthrough.graphql")

GRAPHQL_PATH = "/v3/graphql"
IDENTIFIER_TYPES_CHANNEL = "passthrough_identifier_types"
LISTENER_APPLICATION_NAME = "passthrough-graphql-listener"  # in pg_stat_activity
LISTENER_STOP_SECONDS = 0.5  # how long the listener may take to notice that the app is stopping

# graphql-java's error classifications: the SDKs require extensions.classification on every error.
INVALID_SYNTAX = "InvalidSyntax"
VALIDATION_ERROR = "ValidationError"
DATA_FETCHING = "DataFetchingException"
REQUEST_ERROR = "RequestError"  # refused before any GraphQL work: auth, body, size

CUSTOMER_SQL = (
    "SELECT name, state, description, is_ready, revision, size "
    "FROM passthrough.customer_audiences(%s, %s, %s::text[])"
)
CUSTOMER_AT_SQL = (  # membership as of a past instant, from the event log (sql/functions/230_membership_history.sql)
    "SELECT name, state, description, is_ready, revision, size "
    "FROM passthrough.customer_audiences_at(%s, %s, %s::text[], %s, %s)"
)
SIZE_HISTORY_SQL = (
    "SELECT bucket_start, bucket_end, size_at_start, entered, exited, size_at_end "
    "FROM passthrough.audience_size_history(%s, %s, %s, %s)"
)
LIST_SQL = "SELECT name, description, is_ready, revision, size FROM passthrough.list_audiences(%s, %s)"
# every type: a customer asked by a low-confidence one (the JavaScript SDK's anonymous vuid) is in no audience
IDENTIFIER_TYPES_SQL = "SELECT name FROM passthrough.list_identifier_types() ORDER BY name"

_CURSOR_PREFIX = "audience:"

# --------------------------------------------------------------------------- errors


class FacadeError(Exception):
    """An error a resolver reports; graphql-core locates it and keeps its ``extensions``."""

    def __init__(self, message: str, code: str, *, classification: str = DATA_FETCHING, status: int = 200) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = {"classification": classification, "code": code}
        self.status = status


def _domain_error(sqlstate: str, message: str) -> FacadeError:
    """An error the facade detects itself, coded as the SQL error of the same meaning would be."""
    return FacadeError(message, errors.graphql_code(sqlstate) or errors.DOMAIN_ERRORS[sqlstate].name.upper())


def _database_error(exc: Exception) -> FacadeError:
    report = errors.report(exc)
    coded = errors.graphql_code(report.sqlstate) if report.sqlstate else None
    if coded is not None:  # a code of its own, a statement timeout (TIMEOUT) included: an error of the field
        error = FacadeError(report.message, coded)
    elif report.status == 503:  # the database is unavailable: the whole answer is 503, so clients retry
        error = FacadeError(report.message, report.code.upper(), status=503)
    elif report.status >= 500:
        log.error("GraphQL resolver failed", exc_info=exc)
        error = FacadeError(report.message, report.code.upper())
    else:
        error = FacadeError(report.message, report.code.upper())
    if report.sqlstate:
        error.extensions["sqlstate"] = report.sqlstate
    return error


def _error(message: str, classification: str, code: str, *, locations: Sequence[Any] = ()) -> dict[str, Any]:
    return {
        "message": message,
        "locations": [{"line": loc.line, "column": loc.column} for loc in locations],
        "extensions": {"classification": classification, "code": code},
    }


def _format_error(error: GraphQLError) -> tuple[dict[str, Any], int]:
    """The JSON of one execution error and the HTTP status it calls for (200, or 503)."""
    original = error.original_error
    status = 200
    if isinstance(original, FacadeError):
        extensions = dict(original.extensions)
        message = original.message
        status = original.status
    elif error.path is None:
        # refused before any field was resolved: a variable of the wrong type, an unknown or
        # ambiguous operation name
        extensions = {"classification": VALIDATION_ERROR, "code": "BAD_USER_INPUT"}
        message = error.message
    else:
        log.error("GraphQL field %s failed", error.path, exc_info=original or error)
        extensions = {"classification": DATA_FETCHING, "code": "INTERNAL_ERROR"}
        message = errors.INTERNAL_MESSAGE
    formatted: dict[str, Any] = {
        "message": message,
        "locations": [{"line": loc.line, "column": loc.column} for loc in error.locations or ()],
    }
    if error.path is not None:
        formatted["path"] = list(error.path)
    formatted["extensions"] = extensions
    return formatted, status


# --------------------------------------------------------------------------- schema


@strawberry.type(description="An audience (ODP: segment).")
class Audience:
    name: str
    state: str | None = strawberry.field(
        description='"qualified" under customer.audiences; null in the audiences listing.'
    )
    description: str | None
    is_ready: bool = strawberry.field(description="Always true: passthrough audiences are ready when defined.")
    revision: int
    size: int = strawberry.field(description="The exact number of currently qualified members.")


@strawberry.type
class AudienceEdge:
    node: Audience
    cursor: str


@strawberry.type
class PageInfo:
    has_next_page: bool = strawberry.field(name="hasNextPage")
    end_cursor: str | None = strawberry.field(name="endCursor")


@strawberry.type
class AudienceConnection:
    edges: list[AudienceEdge]
    page_info: PageInfo = strawberry.field(name="pageInfo")


def encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode((_CURSOR_PREFIX + name).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.startswith(_CURSOR_PREFIX):
        raise _domain_error("PT010", "after must be an endCursor or cursor this server returned")
    return text[len(_CURSOR_PREFIX) :]


def _connection(nodes: list[Audience], has_next_page: bool) -> AudienceConnection:
    edges = [AudienceEdge(node=node, cursor=encode_cursor(node.name)) for node in nodes]
    return AudienceConnection(
        edges=edges, page_info=PageInfo(has_next_page=has_next_page, end_cursor=edges[-1].cursor if edges else None)
    )


@dataclass
class Context:
    """What the resolvers of one request share: the limits, and one pooled connection, checked out by
    the first resolver that reads and returned by ``close()`` when the request is answered (so a query
    costs one checkout whatever its number of fields). Resolvers that run at once take turns on it.
    Every statement the facade runs is a read, so one that meets a broken connection (the database
    restarted since the connection was last used) runs again, once, on another (pyapp/web/database.py)."""

    pool: AsyncConnectionPool
    limits: GraphQLLimits
    # the request's key hash while no statement has checked it yet (auth.py): the first statement checks it
    key_gate: bytes | None = None
    # the database refused the key (PT037/PT038): the request is answered with that error alone
    key_refused: psycopg.Error | None = None
    _conn: psycopg.AsyncConnection | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _closed: bool = False

    async def fetchall(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """One SQL statement (autocommit): one round trip, plus the checkout for the request's first."""
        async with self._lock:
            if self._closed:  # a resolver still running after the answer was sent: nobody reads its result
                raise FacadeError(errors.INTERNAL_MESSAGE, "INTERNAL_ERROR")
            for attempt in (1, 2):
                if self._conn is None:
                    if attempt == 2:
                        await database.after_broken(self.pool)
                    self._conn = await self.pool.getconn()
                conn = self._conn
                gate = self.key_gate
                statement, args = (sql, params) if gate is None else (GATE_SQL.format(sql), (*params, gate))
                try:
                    cursor = await conn.execute(statement, args)
                    rows = await cursor.fetchall()
                    self.key_gate = None
                    return rows
                except psycopg.Error as exc:
                    if gate is not None and exc.sqlstate in KEY_REFUSED_SQLSTATES:
                        self.key_refused = exc
                    if not isinstance(exc, psycopg.OperationalError):
                        raise
                    if attempt == 2 or not database.is_broken(exc, conn):
                        raise
                    log.info("connection found broken; trying another: %s", exc)
                    await self._release()
            raise AssertionError("unreachable")  # pragma: no cover

    async def check_key(self) -> None:
        """Check the key now if no statement has (a query that read nothing): sets ``key_refused``."""
        if self.key_gate is not None:
            try:
                await self.fetchall("SELECT 1", ())
            except psycopg.Error as exc:
                if self.key_refused is None:
                    raise

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            await self._release()

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self.pool.putconn(conn)


async def _fetch(info: strawberry.Info, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """One SQL statement on the request's pooled (autocommit) connection: one round trip."""
    context: Context = info.context
    try:
        return await context.fetchall(sql, params)
    except psycopg.Error as exc:
        raise _database_error(exc) from exc


def _instant(seconds: float, field_name: str) -> datetime:
    """Seconds since the Unix epoch (a GraphQL Float) as a timestamp, to the microsecond, as ts is read."""
    try:
        return epoch.from_seconds(Decimal(repr(seconds)))
    except (ArithmeticError, OverflowError, ValueError):
        raise _domain_error("PT010", f"{field_name} must be seconds since the Unix epoch, got {seconds}") from None


def _seconds(moment: datetime) -> float:
    return (moment - epoch.EPOCH) / timedelta(seconds=1)


def _selects(fields: Sequence[Any], name: str) -> bool:
    """Whether the selection (fragments included) asks for a field called ``name`` at any depth."""
    return any(getattr(f, "name", None) == name or _selects(getattr(f, "selections", ()), name) for f in fields)


@strawberry.type(description="An audience's members over one bucket of time (start, end], exact, from the event log.")
class SizeBucket:
    start: float = strawberry.field(description="Seconds since the Unix epoch (UTC hour or day boundary).")
    end: float
    size_at_start: int = strawberry.field(description="Members at start.")
    entered: int = strawberry.field(description="Entries after start, up to and including end.")
    exited: int = strawberry.field(description="Exits after start, up to and including end.")
    size_at_end: int = strawberry.field(description="Members at end: size_at_start + entered - exited.")


async def _size_history(
    info: strawberry.Info,
    audience: str,
    from_: Annotated[float, strawberry.argument(name="from")],
    to: float,
    bucket: str | None = "hour",
) -> list[SizeBucket]:
    bucket = "hour" if bucket is None else bucket  # "" and other names are SQL's to refuse (PT010)
    rows = await _fetch(info, SIZE_HISTORY_SQL, (audience, _instant(from_, "from"), _instant(to, "to"), bucket))
    return [
        SizeBucket(start=_seconds(b), end=_seconds(e), size_at_start=s0, entered=i, exited=o, size_at_end=s1)
        for b, e, s0, i, o, s1 in rows
    ]


@strawberry.type(description="A customer, named by exactly one identifier.")
class Customer:
    identifier_type: strawberry.Private[str]
    identifier: strawberry.Private[str]

    @strawberry.field(
        description="The audiences of subset (all when null) the customer is qualified for; at most 1000 names. "
        "With at (seconds since the Unix epoch): as of that instant, from the event log, sizes included."
    )
    async def audiences(
        self,
        info: strawberry.Info,
        subset: list[str | None] | None = strawberry.UNSET,
        at: float | None = strawberry.UNSET,
    ) -> AudienceConnection:
        subset = None if subset is strawberry.UNSET else subset
        if at is None or at is strawberry.UNSET:
            rows = await _fetch(info, CUSTOMER_SQL, (self.identifier_type, self.identifier, subset))
        else:  # a size as of a past instant reads the audience's log: only when asked for
            with_sizes = _selects(info.selected_fields, "size")
            params = (self.identifier_type, self.identifier, subset, _instant(at, "at"), with_sizes)
            rows = await _fetch(info, CUSTOMER_AT_SQL, params)
        return _connection(
            [Audience(name=n, state=s, description=d, is_ready=r, revision=v, size=z) for n, s, d, r, v, z in rows],
            has_next_page=False,
        )


async def _list_audiences(
    info: strawberry.Info, first: int | None = strawberry.UNSET, after: str | None = strawberry.UNSET
) -> AudienceConnection:
    limits: GraphQLLimits = info.context.limits
    if first is None or first is strawberry.UNSET:
        first = limits.default_page_size
    if not 0 <= first <= limits.max_page_size:
        raise _domain_error("PT010", f"first must be between 0 and {limits.max_page_size}, got {first}")
    after_name = None if after is None or after is strawberry.UNSET else decode_cursor(after)
    rows = await _fetch(info, LIST_SQL, (first + 1, after_name))  # one more row tells whether a page follows
    return _connection(
        [Audience(name=n, state=None, description=d, is_ready=r, revision=v, size=z) for n, d, r, v, z in rows[:first]],
        has_next_page=len(rows) > first,
    )


def _customer_resolver(identifier_types: Sequence[str]) -> Callable[..., Customer | None]:
    """``customer(<type>: String, ...)`` with one keyword argument per identifier type.

    Python parameters are ``arg0, arg1, ...`` (a type may be named like a Python keyword); the
    GraphQL names come from ``strawberry.argument(name=...)``.
    """
    names = {f"arg{i}": name for i, name in enumerate(identifier_types)}

    def customer(info: strawberry.Info, **arguments: str | None) -> Customer | None:
        given = [(names[key], value) for key, value in arguments.items() if isinstance(value, str)]
        if len(given) != 1:
            listed = ", ".join(identifier_types) or "(none are defined)"
            got = "none" if not given else ", ".join(name for name, _ in given)
            raise _domain_error(
                "PT003",
                f"invalid identifier: customer takes exactly one identifier argument, got {got}; "
                f"the identifier types are {listed}",
            )
        (identifier_type, identifier), = given
        return Customer(identifier_type=identifier_type, identifier=identifier)

    parameters = [inspect.Parameter("info", inspect.Parameter.KEYWORD_ONLY, annotation=strawberry.Info)]
    parameters += [
        inspect.Parameter(
            key,
            inspect.Parameter.KEYWORD_ONLY,
            default=strawberry.UNSET,
            annotation=Annotated[str | None, strawberry.argument(name=name)],
        )
        for key, name in names.items()
    ]
    customer.__signature__ = inspect.Signature(parameters, return_annotation=Customer | None)  # type: ignore[attr-defined]
    return customer


def build_schema(identifier_types: Sequence[str]) -> strawberry.Schema:
    """The Strawberry schema whose ``customer`` takes one argument per identifier type."""
    query = type(
        "Query",
        (),
        {
            "customer": strawberry.field(
                resolver=_customer_resolver(identifier_types),
                description="A customer by exactly one identifier: " + ", ".join(identifier_types) + ".",
            ),
            "audiences": strawberry.field(
                resolver=_list_audiences,
                description="Every audience in name order; first at most 1000 (default 100), after an endCursor.",
            ),
            "size_history": strawberry.field(
                resolver=_size_history,
                description="An audience's exact size over time: hour or day buckets (UTC) from the one holding "
                "from to the one holding to (seconds since the Unix epoch), at most 1000.",
            ),
        },
    )
    return strawberry.Schema(query=strawberry.type(query), config=StrawberryConfig(auto_camel_case=False))


# --------------------------------------------------------------------------- parsed documents


@dataclass(frozen=True)
class Prepared:
    """A query text, parsed, measured and validated against one schema."""

    document: DocumentNode | None
    errors: list[dict[str, Any]]
    plan: Plan | None = None  # the SDKs' shape, compiled (graphql_plan.py)


@dataclass
class SchemaState:
    identifier_types: tuple[str, ...]
    schema: strawberry.Schema
    cache: OrderedDict[str, Prepared] = field(default_factory=OrderedDict)

    @property
    def graphql_schema(self) -> GraphQLSchema:
        return self.schema._schema

    def prepare(self, query: str, limits: GraphQLLimits) -> Prepared:
        prepared = self.cache.get(query)
        if prepared is not None:
            self.cache.move_to_end(query)
            return prepared
        prepared = _prepare(self.graphql_schema, query, limits)
        if prepared.document is not None:
            prepared = Prepared(prepared.document, [], compile_plan(prepared.document, self.identifier_types))
        if len(query) <= limits.max_cached_query_chars:
            self.cache[query] = prepared
            if len(self.cache) > limits.cache_entries:
                self.cache.popitem(last=False)
        return prepared


def _prepare(schema: GraphQLSchema, query: str, limits: GraphQLLimits) -> Prepared:
    try:
        document = parse(query, max_tokens=limits.max_tokens)
    except GraphQLError as exc:
        if "Document contains more than" in exc.message:  # graphql-core stopped at max_tokens
            message = f"the query is too long: more than {limits.max_tokens} tokens"
            return Prepared(None, [_error(message, VALIDATION_ERROR, "QUERY_TOO_LARGE")])
        return Prepared(None, [_error(exc.message, INVALID_SYNTAX, "GRAPHQL_PARSE_FAILED", locations=exc.locations or ())])
    exceeded = check_limits(document, limits)
    if exceeded is not None:
        return Prepared(None, [_error(exceeded.message, VALIDATION_ERROR, exceeded.code)])
    problems = validate(schema, document, max_errors=20)
    if problems:
        return Prepared(
            None,
            [_error(p.message, VALIDATION_ERROR, "GRAPHQL_VALIDATION_FAILED", locations=p.locations or ()) for p in problems],
        )
    return Prepared(document, [])


# --------------------------------------------------------------------------- the facade


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
        self.compiled = compiled  # the SDKs' query through its compiled plan (graphql_plan.py)
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
        context = Context(self._get_pool(request), self.limits, key_gate=key_gate)
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
            formatted = [_format_error(e) for e in result.errors]
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
        """The query's ``data`` through its compiled plan (graphql_plan.py), or None: the executor answers
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
    return JSONResponse({"errors": [_error(message, REQUEST_ERROR, code)]}, status_code=status, headers=headers)


