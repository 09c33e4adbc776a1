"""API keys: the ``x-api-key`` header, checked against the database on every request.

Scopes: a ``public`` key may send events and read membership (GraphQL); a ``private`` key may do
everything, segments included. Endpoints call ``require_scope(request, Scope.PUBLIC | PRIVATE)``
first thing; the GraphQL facade does the same.

Only the SHA-256 of a key travels to the database, which looks it up by that hash
(``passthrough.authenticate_api_key``). That is the constant-time comparison: the lookup is keyed by
the hash of a 244-bit random secret, so whatever its timing reveals is about hashes, and no key
can be recovered or guessed from it. Keys are not cached, so a revoked key is refused from the next
request on.
"""

from __future__ import annotations

import enum
import hashlib

from starlette.requests import Request

from pyapp.web.database import connection
from pyapp.web.responses import ApiError

API_KEY_HEADER = "x-api-key"


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
    key = request.headers.get(API_KEY_HEADER)
    if not key:
        raise ApiError(401, "missing_api_key", f"send an API key in the {API_KEY_HEADER} header")
    async with connection(request) as conn:
        cursor = await conn.execute("SELECT passthrough.authenticate_api_key(%s)", (key_hash(key),))
        row = await cursor.fetchone()
    if row is None or row[0] is None:
        raise ApiError(401, "invalid_api_key", "the API key is unknown or revoked")
    scope = Scope(row[0])
    if not scope.allows(required):
        raise ApiError(
            403, "insufficient_scope", f"this endpoint needs a {required.value} API key; the key sent is {scope.value}"
        )
    return scope
