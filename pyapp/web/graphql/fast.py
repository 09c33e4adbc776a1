"""The SDKs' GraphQL query answered in front of the framework: the hot request with the least work.

Server-side SDKs ask ``POST /v3/graphql`` the same question on every new visitor. When such a request is plain
(JSON body, no Origin, no Content-Encoding, no Transfer-Encoding), sent with a key this worker has found valid
before (pyapp/web/auth.py), and its query has a compiled plan already (pyapp/web/graphql/plan.py: the
JavaScript SDK's literal form, or a text the facade has prepared), ``GraphQLFastPath`` answers it here: one
statement, which checks the key itself, and the same bytes the facade would send. Everything else, and any
error on the way, goes on to the app with the body as it was read, and the facade answers as always.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pyapp.web.auth import Scope as KeyScope
from pyapp.web.auth import app_known_keys, key_hash
from pyapp.web.database import replica_pool, separate_key_pool
from pyapp.web.graphql.context import Context
from pyapp.web.graphql.endpoint import GRAPHQL_PATH, GraphQLFacade
from pyapp.web.responses import json_bytes



class GraphQLFastPath:
    def __init__(self, app: ASGIApp, facade: GraphQLFacade, vary_origin: bool) -> None:
        self.app = app
        self.facade = facade
        # what pyapp/web/cors.py's policy adds to an answer to a request without Origin (none without a policy)
        self.extra_headers = [(b"vary", b"Origin")] if vary_origin else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != GRAPHQL_PATH
                or not self.facade.compiled):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        key = headers.get(b"x-api-key")
        declared = headers.get(b"content-length", b"")
        if (key is None or headers.get(b"content-type") != b"application/json" or b"origin" in headers
                or b"content-encoding" in headers or b"transfer-encoding" in headers or not declared.isdigit()
                or int(declared) > self.facade.limits.max_body_bytes):
            await self.app(scope, receive, send)
            return
        digest = key_hash(key.decode("latin-1"))
        request_app = scope["app"]
        known = app_known_keys(request_app).get(digest)
        if known is None or not known.allows(KeyScope.PUBLIC):
            await self.app(scope, receive, send)  # checked there, before the body is read
            return
        body, complete, message = await _read_body(receive, int(declared))
        answer = await self._answer(request_app, body, digest) if complete else None
        if answer is None:
            await self.app(scope, _replay(body, complete, message, receive), send)
            return
        # the headers of the facade's JSONResponse, in its order, and the CORS policy's
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", str(len(answer)).encode()), (b"content-type", b"application/json"),
            *self.extra_headers]})
        await send({"type": "http.response.body", "body": answer})

    async def _answer(self, app: Any, body: bytes, digest: bytes) -> bytes | None:
        """The response body, or None: the app answers (after this, nothing has been sent)."""
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(request, dict):
            return None
        query, variables, operation_name = request.get("query"), request.get("variables"), request.get("operationName")
        if (not isinstance(query, str) or not (variables is None or isinstance(variables, dict))
                or not (operation_name is None or isinstance(operation_name, str))):
            return None
        plan = self.facade.known_plan(query)
        if plan is None:
            return None
        # the read budget, or the replica's with the key checked on the primary beside it (database.py)
        context = Context(replica_pool(app), self.facade.limits, key_gate=digest, key_pool=separate_key_pool(app))
        try:
            data = await self.facade.run_plan(plan, context, variables, operation_name)
        finally:
            await context.close()
        if data is None:
            return None  # the app meets the error again (a refused key included) and answers it
        return json_bytes({"data": data})  # the facade's JSONResponse body


async def _read_body(receive: Receive, declared: int) -> tuple[bytes, bool, Message | None]:
    """The body as Content-Length declared it, and whether it all came; when not, the message that came
    instead (the client went away)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False, message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True, None


def _replay(body: bytes, complete: bool, message: Message | None, receive: Receive) -> Receive:
    """``receive`` for the app: the body read so far, then whatever comes next."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": not complete}]
    if message is not None:
        pending.append(message)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
