"""API keys: the ``x-api-key`` header, checked against the database on every request.

Scopes: a ``public`` key may send events and read membership (GraphQL); a ``private`` key may do
everything, segments included. Endpoints call ``require_scope(request, Scope.PUBLIC | PRIVATE)``
first thing, or, when the request has no body to read between the check and the work,
``authorized_connection(request, scope)``, which checks the key and hands over the same pooled
connection for the work (one checkout). The GraphQL facade does the same.

Only the SHA-256 of a key travels to the database, which looks it up by that hash
(``passthrough.authenticate_api_key``). That is the constant-time comparison: the lookup is keyed by
the hash of a 244-bit random secret, so whatever its timing reveals is about hashes, and no key
can be recovered or guessed from it. Keys are not cached, so a revoked key is refused from the next
request on.

A request with a body is authenticated before its body is read, and the connection is not kept
while the body arrives: a client holding a public key (public keys ship in web pages and apps) must
not be able to pin the pool's connections by sending bodies slowly.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from starlette.requests import Request

from pyapp.web.database import connection_after, get_pool
from pyapp.web.responses import ApiError

API_KEY_HEADER = "x-api-key"
AUTHENTICATE_SQL = "SELECT passthrough.authenticate_api_key(%s)"


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


@asynccontextmanager
async def authorized_connection(
    request: Request, required: Scope
) -> AsyncIterator[tuple[psycopg.AsyncConnection, Scope]]:
    """A pooled connection (autocommit) on which the request's API key was just found to allow
    ``required``, and the key's scope: 401 without a valid key (a missing key without a checkout),
    403 when its scope is too narrow. The lookup is a read: on a connection found broken it runs
    again on another (pyapp/web/database.py)."""
    key = request.headers.get(API_KEY_HEADER)
    if not key:
        raise ApiError(401, "missing_api_key", f"send an API key in the {API_KEY_HEADER} header")
    digest = key_hash(key)

    async def lookup(conn: psycopg.AsyncConnection) -> str | None:
        cursor = await conn.execute(AUTHENTICATE_SQL, (digest,))
        row = await cursor.fetchone()
        return None if row is None else row[0]

    async with connection_after(get_pool(request), lookup) as (conn, scope_name):
        yield conn, _allowed_scope(scope_name, required)


def _allowed_scope(scope_name: str | None, required: Scope) -> Scope:
    if scope_name is None:
        raise ApiError(401, "invalid_api_key", "the API key is unknown or revoked")
    scope = Scope(scope_name)
    if not scope.allows(required):
        raise ApiError(
            403, "insufficient_scope", f"this endpoint needs a {required.value} API key; the key sent is {scope.value}"
        )
    return scope
