"""The GraphQL schema (built with Strawberry from the database) and its resolvers: ``customer`` and its
``audiences``, the ``audiences`` listing and ``size_history``. ``str(build_schema(...))`` prints the SDL.

Arguments are nullable (``String``, ``[String]``) because the Optimizely SDKs declare their variables that way.
``customer`` takes exactly one non-null identifier argument. ``Customer.audiences`` is non-null, so an error reading
it (say an invalid identifier) makes ``customer`` null, as ODP answers. Resolvers hold no membership rule:
``Customer.audiences`` is one call of ``passthrough.customer_audiences`` (``customer_audiences_at`` with ``at``),
``Query.audiences`` one statement of ``passthrough.list_audiences`` and ``audience_page_info`` (page sizes are
theirs), and ``size_history`` one of ``passthrough.audience_size_history``; every error SQL raises is mapped by
``pyapp.errors`` (errors.py).

The ``customer`` arguments follow ``passthrough.list_identifier_types()``: the schema is built when the facade
starts and rebuilt when a ``NOTIFY passthrough_identifier_types`` arrives (a dedicated connection LISTENs; after a
lost connection it reconnects and reloads), so no restart is needed.
"""

from __future__ import annotations

import base64
import binascii
import inspect
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import psycopg
import strawberry
from strawberry.schema.config import StrawberryConfig

from pyapp.web.graphql.context import Context
from pyapp.web.graphql.errors import INVALID_IDENTIFIER, argument_error, database_error

CUSTOMER_SQL = (
    "SELECT name, state, description, is_ready, revision, size "
    "FROM passthrough.customer_audiences(%s, %s, %s::text[])"
)
CUSTOMER_AT_SQL = (  # membership as of a past instant, from the event log (sql/functions/230_membership_history.sql)
    "SELECT name, state, description, is_ready, revision, size "
    "FROM passthrough.customer_audiences_at(%s, %s, %s::text[], passthrough.instant_from_seconds(%s, 'at'), %s)"
)
SIZE_HISTORY_SQL = (
    "SELECT bucket_start, bucket_end, size_at_start, entered, exited, size_at_end "
    "FROM passthrough.audience_size_history(%s, passthrough.instant_from_seconds(%s, 'from'), "
    "passthrough.instant_from_seconds(%s, 'to'), %s)"
)
# One statement, one snapshot: the page and whether another follows (one row even when the page is empty). The
# statement may be wrapped (the API key gate), so the rows come with their place in the page.
LIST_SQL = (
    "SELECT p.has_next_page, l.ordinality, l.name, l.description, l.is_ready, l.revision, l.size "
    "FROM passthrough.audience_page_info(%s, %s) p "
    "LEFT JOIN passthrough.list_audiences(%s, %s) WITH ORDINALITY l ON true"
)
# every type: a customer asked by a low-confidence one (the JavaScript SDK's anonymous vuid) is in no audience
IDENTIFIER_TYPES_SQL = "SELECT name FROM passthrough.list_identifier_types() ORDER BY name"

CURSOR_PREFIX = "audience:"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # size_history answers its bucket bounds as seconds since



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
    return base64.urlsafe_b64encode((CURSOR_PREFIX + name).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.startswith(CURSOR_PREFIX):
        raise argument_error("after must be an endCursor or cursor this server returned")
    return text[len(CURSOR_PREFIX) :]


def _connection(nodes: list[Audience], has_next_page: bool) -> AudienceConnection:
    edges = [AudienceEdge(node=node, cursor=encode_cursor(node.name)) for node in nodes]
    return AudienceConnection(
        edges=edges, page_info=PageInfo(has_next_page=has_next_page, end_cursor=edges[-1].cursor if edges else None)
    )



async def _fetch(info: strawberry.Info, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """One SQL statement on the request's pooled (autocommit) connection: one round trip."""
    context: Context = info.context
    try:
        return await context.fetchall(sql, params)
    except psycopg.Error as exc:
        raise database_error(exc) from exc


def _exact(seconds: float) -> Decimal:
    """A GraphQL Float as the decimal it was written as (its shortest repr), sent as numeric: a float8 would keep
    only 15 digits. SQL turns it into a timestamp (passthrough.instant_from_seconds: its rounding, its PT010)."""
    return Decimal(repr(seconds))


def _seconds(moment: datetime) -> float:
    return (moment - EPOCH) / timedelta(seconds=1)


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
    rows = await _fetch(info, SIZE_HISTORY_SQL, (audience, _exact(from_), _exact(to), bucket))
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
            params = (self.identifier_type, self.identifier, subset, _exact(at), with_sizes)
            rows = await _fetch(info, CUSTOMER_AT_SQL, params)
        return _connection(
            [Audience(name=n, state=s, description=d, is_ready=r, revision=v, size=z) for n, s, d, r, v, z in rows],
            has_next_page=False,
        )


async def _list_audiences(
    info: strawberry.Info, first: int | None = strawberry.UNSET, after: str | None = strawberry.UNSET
) -> AudienceConnection:
    first = None if first is strawberry.UNSET else first  # SQL's default page size, and SQL's range (PT010)
    after_name = None if after is None or after is strawberry.UNSET else decode_cursor(after)
    rows = await _fetch(info, LIST_SQL, (first, after_name, first, after_name))
    page = sorted((row for row in rows if row[1] is not None), key=lambda row: row[1])
    return _connection(
        [Audience(name=n, state=None, description=d, is_ready=r, revision=v, size=z) for _, _, n, d, r, v, z in page],
        has_next_page=rows[0][0],
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
            raise argument_error(
                f"invalid identifier: customer takes exactly one identifier argument, got {got}; "
                f"the identifier types are {listed}",
                INVALID_IDENTIFIER,
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
