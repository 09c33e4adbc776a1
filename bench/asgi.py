"""The real HTTP API (pyapp.web.create_app, as `passthrough serve` builds it with its defaults) as an ASGI app
factory, for serving engines other than `passthrough serve`'s (bench/engines.py):

    uvicorn --factory bench.asgi:create ...      granian --interface asgi --factory bench.asgi:create ...

The database URL comes from $BENCH_APP_DATABASE_URL; the database must be migrated already."""

from __future__ import annotations

import os

URL_ENV = "BENCH_APP_DATABASE_URL"


def create():
    from pyapp.web import create_app

    return create_app(os.environ[URL_ENV])
