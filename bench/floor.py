"""The floor for the GraphQL ``customer`` read: the least a server of this design can do for the SDK's query.

    python -m bench.floor --database-url URL [--host 127.0.0.1] [--port 8090] [--workers 1]
                          [--loop uvloop] [--http httptools]

A raw ASGI app (no framework) served by uvicorn, on the engine `passthrough serve` uses (uvloop + httptools by
default). ``POST /v3/graphql`` reads the SDK's GraphQL body (JSON), takes ``variables.userId`` and
``variables.audiences``, makes the one SQL call the GraphQL facade makes for that query
(``passthrough.customer_audiences``, bench.run.READ_SQL) on a connection of a psycopg ``AsyncConnectionPool``
(autocommit, sized as the app's: 1..10 per worker), and writes the facade's JSON shape
(``{"data": {"customer": {"audiences": {"edges": [{"node": {"name", "state"}}]}}}}``) with orjson. No API key,
no GraphQL parsing or validation, no framework: whatever the real query costs above this is what the
facade, Starlette and the key check add. ``GET /healthz`` answers 200 once the pool is open; any other path 404.
What every request of `passthrough serve` pays is paid here too (issue 16): the metrics middleware
(pyapp/web/metrics_http.py, a counter and a histogram per request; with several workers in multiprocess mode).

The app object is ``bench.floor:app`` (the database URL from $BENCH_FLOOR_DATABASE_URL), so other engines can
serve it too (bench/engines.py runs it under granian).
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext

import orjson
from psycopg_pool import AsyncConnectionPool

from pyapp.web.metrics import ServiceMetrics
from pyapp.web.metrics_http import RequestMetrics

URL_ENV = "BENCH_FLOOR_DATABASE_URL"
# the statement of the GraphQL facade's Customer.audiences (pyapp/web/graphql/schema.py CUSTOMER_SQL; bench.run.READ_SQL)
READ_SQL = ("SELECT name, state, description, is_ready, revision, size "
            "FROM passthrough.customer_audiences(%s, %s, %s::text[])")
IDENTIFIER_TYPE = "fs_user_id"  # the SDK query's customer(fs_user_id: $userId)
JSON_HEADERS = [(b"content-type", b"application/json")]

_pool: AsyncConnectionPool | None = None


async def _respond(send, status: int, body: bytes, headers=JSON_HEADERS) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive, send) -> None:
    global _pool
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                _pool = AsyncConnectionPool(os.environ[URL_ENV], min_size=1, max_size=10,
                                            kwargs={"autocommit": True, "application_name": "bench-floor"},
                                            open=False)
                await _pool.open(wait=True, timeout=30)
            except Exception as exc:  # noqa: BLE001
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _pool is not None:
                await _pool.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def floor_app(scope, receive, send) -> None:
    kind = scope["type"]
    if kind == "lifespan":
        await _lifespan(receive, send)
        return
    if kind != "http":
        return
    path, method = scope["path"], scope["method"]
    if path == "/v3/graphql" and method == "POST":
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        try:
            variables = orjson.loads(b"".join(chunks))["variables"]
            user, subset = variables["userId"], variables["audiences"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await _respond(send, 400, b'{"errors":[{"message":"not the SDK query"}]}')
            return
        async with _pool.connection() as conn:
            cursor = await conn.execute(READ_SQL, (IDENTIFIER_TYPE, user, subset))
            rows = await cursor.fetchall()
        await _respond(send, 200, orjson.dumps(
            {"data": {"customer": {"audiences": {"edges": [{"node": {"name": r[0], "state": r[1]}} for r in rows]}}}}))
    elif path == "/healthz" and _pool is not None:
        await _respond(send, 200, b'{"status":"ok"}')
    else:
        await _respond(send, 404, b'{"errors":[{"message":"not found"}]}')


# the same per-request metric updates as `passthrough serve` (its outermost middleware)
app = RequestMetrics(floor_app, ServiceMetrics(), static_paths=("/v3/graphql", "/healthz"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.floor", description=__doc__.split("\n\n")[1])
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8090)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--loop", default="uvloop", help="uvicorn's --loop (default: %(default)s)")
    ap.add_argument("--http", default="httptools", help="uvicorn's --http (default: %(default)s)")
    args = ap.parse_args(argv)
    import uvicorn

    from pyapp.web.metrics_process import multiprocess_directory

    os.environ[URL_ENV] = args.database_url  # read by each worker's lifespan
    # several workers keep their metrics as `passthrough serve`'s do (pyapp/serving.py)
    with multiprocess_directory() if args.workers > 1 else nullcontext():
        uvicorn.run("bench.floor:app", host=args.host, port=args.port, workers=args.workers, loop=args.loop,
                    http=args.http, lifespan="on", log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
