"""Helpers for the HTTP tests (fixtures are in http_fixtures.py): events, headers, a TestClient factory.

Every response a client from ``make_client`` receives is checked against the OpenAPI document
(a response hook): its status must be documented for that path and method, it must be JSON, and an
error must have the stable error shape. So the document cannot drift from what the API answers.
"""

from __future__ import annotations

import gzip
import re
import warnings
from typing import Any

import httpx
import orjson
import psycopg

with warnings.catch_warnings():
    # starlette 1.x prefers the httpx2 package for its TestClient; httpx works the same
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from starlette.testclient import TestClient

from pyapp.web import ApiConfig, api_routes, create_app
from pyapp.web.openapi.document import DOCUMENT

TEST_CONFIG = ApiConfig(pool_min_size=1, pool_max_size=4, pool_timeout=2.0)
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def json_headers(key: str | None = None, **extra: str) -> dict[str, str]:
    headers = {"content-type": "application/json", **extra}
    if key is not None:
        headers["x-api-key"] = key
    return headers


def gzipped(value: Any) -> bytes:
    return gzip.compress(orjson.dumps(value))


def create_key(conn: psycopg.Connection, name: str, scope: str) -> str:
    return conn.execute("SELECT passthrough.create_api_key(%s, %s)", (name, scope)).fetchone()[0]


# --------------------------------------------------------------------------- the OpenAPI document as an oracle


def openapi_path(route_path: str) -> str:
    """A Starlette route's path as an OpenAPI path template: {name:path} is {name} there."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", route_path)


# Parameters the app routes with Starlette's path convertor ({name:path}): their decoded value may hold "/".
_WIDE_PARAMS = {openapi_path(route.path): set(re.findall(r"\{(\w+):path\}", route.path)) for route in api_routes()}


def _template_regex(template: str) -> re.Pattern[str]:
    """A regex for the decoded paths the app routes to this OpenAPI path template."""
    wide = _WIDE_PARAMS.get(template, set())
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("^" + "".join(
        (".+" if p[1:-1] in wide else "[^/]+") if p.startswith("{") else re.escape(p) for p in parts) + "$")


_TEMPLATES = [(template, _template_regex(template)) for template in DOCUMENT["paths"]]


def documented_path(path: str) -> str | None:
    """The OpenAPI path template a concrete path falls under (the most specific one), or None."""
    matches = [template for template, regex in _TEMPLATES if regex.match(path)]
    # "/v3/segments/{segment_id}:validate" is more specific than "/v3/segments/{segment_id}"
    return max(matches, key=len) if matches else None


def documented_operations(method: str, path: str) -> list[dict[str, Any]]:
    """The operations a request may be answered by: the one of its most specific path, or, when that path
    has no such method, those of the other paths it matches (GET /v3/segments/x:validate is a GET of the
    segment "x:validate")."""
    matching = sorted((t for t, regex in _TEMPLATES if regex.match(path)), key=len, reverse=True)
    for template in matching:
        operation = DOCUMENT["paths"][template].get(method.lower())
        if operation is not None:
            return [operation]
    return []


def documented_response(method: str, path: str, status: int) -> dict[str, Any] | None:
    """The OpenAPI response object for this answer, or None when the document does not foresee it.

    404 for a path the document lacks and 405 for a method no path has are foreseen, with the Error body."""
    for operation in documented_operations(method, path):
        if str(status) in operation["responses"]:
            return operation["responses"][str(status)]
    if method == "OPTIONS" and status in (200, 400):  # a CORS preflight (pyapp/web/cors.py), as the info says
        return {"content": {"text/plain": {"schema": {"type": "string"}}}}
    if (status == 404 and documented_path(path) is None) or (status == 405 and not documented_operations(method, path)):
        return {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return None


def check_response_is_documented(response: httpx.Response) -> None:
    response.read()
    method, path = response.request.method, response.request.url.path
    if method == "HEAD":
        return
    documented = documented_response(method, path, response.status_code)
    assert documented is not None, (
        f"{method} {path} answered {response.status_code}, which pyapp/web/openapi/ does not document: {response.text[:300]}"
    )
    matching = [(media_type, content) for media_type, content in documented["content"].items()
                if response.headers["content-type"].startswith(media_type)]
    assert len(matching) == 1, (method, path, response.headers, list(documented["content"]))
    [(media_type, content)] = matching
    if content["schema"].get("$ref") == "#/components/schemas/Error":
        body = response.json()
        assert set(body) == {"title", "status", "timestamp", "detail"}, body
        assert body["status"] == response.status_code
        assert TIMESTAMP.match(body["timestamp"]), body
        assert isinstance(body["detail"]["code"], str) and body["detail"]["code"], body
        assert isinstance(body["detail"]["message"], str) and body["detail"]["message"], body


def make_client(database_url: str, config: ApiConfig = TEST_CONFIG) -> TestClient:
    """A TestClient on a new app; use it as a context manager (that runs the lifespan: the pool opens)."""
    test_client = TestClient(create_app(database_url, config=config))
    test_client.event_hooks["response"].append(check_response_is_documented)
    return test_client
