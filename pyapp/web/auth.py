"""API keys: the ``x-api-key`` header, checked against the database on every request. A ``public`` key may send
events and read membership (GraphQL); a ``private`` key may do everything, segments included.

Only the SHA-256 of a key travels to the database, which looks it up by that hash (``passthrough._require_api_key``,
which raises PT037/PT038 as the API answers them). That is the constant-time comparison: the lookup is keyed by the
hash of a 244-bit random secret, so whatever its timing reveals is about hashes, and no key can be recovered or
guessed from it.

Endpoints call ``require_scope`` first thing, or ``authorized_connection``, which hands over the checked connection
for the work (one checkout) when there is no body to read in between; the hot requests (``POST /v3/events``,
GraphQL) call ``checked_key``, which costs no round trip of its own for a key this worker has found valid. A
request with a body is authenticated before its body is read, and the connection is not kept while the body
arrives: a client holding a public key (public keys ship in web pages and apps) must not be able to pin the pool's
connections by sending bodies slowly.
"""

from __future__ import annotations

import enum
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from starlette.requests import Request

from psycopg_pool import AsyncConnectionPool

from pyapp.web.database import connection_after, get_key_pool, get_pool
from pyapp.web.responses import ApiError

API_KEY_HEADER = "x-api-key"
AUTHENTICATE_SQL = "SELECT passthrough._require_api_key(%s, %s)"
# A read that must also check the key (the SQL is a single SELECT; its rows keep their order): a hot
# request's one statement
GATE_SQL = "SELECT gated.* FROM ({}) gated WHERE passthrough._require_api_key(%s, 'public') IS NOT NULL"
KEY_REFUSED_SQLSTATES = frozenset({"PT037", "PT038"})  # an unknown or revoked key; too narrow a scope


class Scope(enum.Enum):
    PUBLIC = "public"
    PRIVATE = "private"

    def allows(self, required: Scope) -> bool:
        return self is Scope.PRIVATE or required is Scope.PUBLIC


def key_hash(key: str) -> bytes:
    """What the database stores for a key: sha256 of its UTF-8 text."""
    return hashlib.sha256(key.encode("utf-8")).digest()


async def require_scope(request: Request, required: Scope) -> Scope:
    """The scope of the request's API key; 401 without a valid key, 403 when its scope is too narrow."""
    async with authorized_connection(request, required) as (_, scope):
        return scope


@dataclass(frozen=True)
class CheckedKey:
    """The request's key: its hash, its scope, and whether the database vouched for it during this request
    (when not, the request's statement must check it: ``GATE_SQL``)."""

    hash: bytes
    scope: Scope
    verified: bool


class KnownKeys:
    """The keys this worker has found valid, by hash (at most ``limit``, the least recently used go first).
    Only valid keys are kept; a key refused by the database is forgotten."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._scopes: OrderedDict[bytes, Scope] = OrderedDict()

    def get(self, digest: bytes) -> Scope | None:
        scope = self._scopes.get(digest)
        if scope is not None:
            self._scopes.move_to_end(digest)
        return scope

    def remember(self, digest: bytes, scope: Scope) -> None:
        self._scopes[digest] = scope
        self._scopes.move_to_end(digest)
        while len(self._scopes) > self._limit:
            self._scopes.popitem(last=False)

    def forget(self, digest: bytes) -> None:
        self._scopes.pop(digest, None)


def known_keys(request: Request) -> KnownKeys:
    return app_known_keys(request.app)


def app_known_keys(app: Any) -> KnownKeys:
    """The keys the worker running ``app`` has found valid."""
    keys = getattr(app.state, "known_keys", None)
    if keys is None:
        keys = app.state.known_keys = KnownKeys()
    return keys


async def checked_key(request: Request, required: Scope) -> CheckedKey:
    """The request's key, allowing ``required``: from this worker's memory (``KnownKeys``) when it has found the
    key valid before, with no round trip: the request's one statement checks it instead (``GATE_SQL``, or an
    argument of ``apply_events``), so a revoked key is still refused from the next request on, by that statement,
    and forgotten. Else checked by the database now, on its own, so a missing or unknown key gets its 401 (or a
    too narrow one its 403) before anything is spent on the body."""
    digest = key_hash(_presented_key(request))
    scope = known_keys(request).get(digest)
    if scope is not None and scope.allows(required):
        return CheckedKey(digest, scope, verified=False)
    scope = await require_scope(request, required)
    return CheckedKey(digest, scope, verified=True)


def key_refused(request: Request, digest: bytes, exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing the key whose hash is ``digest`` (PT037/PT038: the error is
    the answer). An unknown or revoked key (PT037) is forgotten; one of too narrow a scope stays known."""
    if not isinstance(exc, psycopg.Error) or exc.sqlstate not in KEY_REFUSED_SQLSTATES:
        return False
    if exc.sqlstate == "PT037":
        known_keys(request).forget(digest)
    return True


def _presented_key(request: Request) -> str:
    key = request.headers.get(API_KEY_HEADER)
    if not key:
        raise ApiError(401, "missing_api_key", f"send an API key in the {API_KEY_HEADER} header")
    return key


@asynccontextmanager
async def authorized_connection(
    request: Request, required: Scope
) -> AsyncIterator[tuple[psycopg.AsyncConnection, Scope]]:
    """A pooled connection (autocommit) on which the request's API key was just found to allow
    ``required``, and the key's scope: 401 without a valid key (a missing key without a checkout),
    403 when its scope is too narrow. The lookup is a read: on a connection found broken it runs
    again on another (pyapp/web/database.py)."""
    digest = key_hash(_presented_key(request))
    try:
        async with connection_after(get_key_pool(request), _lookup(digest, required)) as (conn, scope_name):
            scope = Scope(scope_name)
            known_keys(request).remember(digest, scope)
            yield conn, scope
    except psycopg.Error as exc:
        key_refused(request, digest, exc)  # unknown or revoked: not a key to remember
        raise


async def check_key(pool: AsyncConnectionPool, digest: bytes, required: Scope) -> Scope:
    """The scope of the key whose hash is ``digest``, checked on ``pool`` (the primary's, beside a read on a
    replica: pyapp/web/graphql/context.py); PT037/PT038 as ``psycopg.Error``."""
    async with connection_after(pool, _lookup(digest, required)) as (_, scope_name):
        return Scope(scope_name)


def _lookup(digest: bytes, required: Scope) -> Callable[[psycopg.AsyncConnection], Awaitable[str]]:
    """The key's lookup, for ``connection_after``: a read, so it runs again on a connection found broken."""
    async def lookup(conn: psycopg.AsyncConnection) -> str:
        cursor = await conn.execute(AUTHENTICATE_SQL, (digest, required.value))
        (scope_name,) = await cursor.fetchone()
        return scope_name

    return lookup


async def _ping(conn: psycopg.AsyncConnection) -> None:
    await conn.execute("SELECT 1")


@asynccontextmanager
async def authorized_read(
    request: Request, required: Scope
) -> AsyncIterator[tuple[psycopg.AsyncConnection, Scope]]:
    """``authorized_connection`` for a route whose budget is REPLICA: with a replica, the key is checked on the
    primary first, then the block gets a replica connection (found alive by one round trip, so a broken one is
    replaced rather than failing the request); without one, ``authorized_connection`` itself."""
    pool = get_pool(request)
    if pool is get_key_pool(request):
        async with authorized_connection(request, required) as checked:
            yield checked
        return
    scope = await require_scope(request, required)
    async with connection_after(pool, _ping) as (conn, _):
        yield conn, scope
