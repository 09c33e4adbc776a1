"""GET /openapi.json, and the document against the app: routes, methods, statuses, scopes, references.

Statuses are also checked on every response of every HTTP test (http_helpers.check_response_is_documented).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from http_helpers import check_response_is_documented, openapi_path
from starlette.routing import Mount, Route

from pyapp import __version__
from pyapp.web import create_app
from pyapp.web.openapi.document import DOCUMENT

pytest_plugins = ["http_fixtures"]

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def served_operations() -> set[tuple[str, str]]:
    """(path, method) of every route the app serves, HEAD aside (Starlette adds it to every GET)."""
    served = set()
    for route in create_app("postgresql://unused@/none").routes:
        if isinstance(route, Route):
            served |= {(openapi_path(route.path), m.lower()) for m in route.methods or () if m != "HEAD"}
        elif isinstance(route, Mount):
            served |= {(route.path, m) for m in DOCUMENT["paths"].get(route.path, {"<undocumented>": None})}
        else:
            raise AssertionError(f"unexpected route {route!r}")
    return served


def documented_operations() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method): operation
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def test_the_document_is_served(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == DOCUMENT
    assert DOCUMENT["openapi"] == "3.1.0" and DOCUMENT["info"]["version"] == __version__


def test_every_route_is_documented_with_its_methods_and_nothing_else():
    served, documented = served_operations(), set(documented_operations())
    assert served - documented == set(), "served but not in pyapp/web/openapi/"
    assert documented - served == set(), "in pyapp/web/openapi/ but not served"


def test_operation_ids_are_unique():
    ids = [op["operationId"] for op in documented_operations().values()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("key", sorted(documented_operations()), ids=lambda k: f"{k[1].upper()} {k[0]}")
def test_each_operation_documents_its_statuses(key):
    path, method = key
    operation = documented_operations()[key]
    statuses = set(operation["responses"])
    assert all(re.fullmatch(r"[1-5]\d\d", s) for s in statuses), statuses
    assert any(s.startswith("2") for s in statuses)
    if operation["security"]:
        assert operation["security"] == [{"ApiKey": []}]
        assert operation["x-required-scope"] in ("public", "private")
        assert {"401", "503"} <= statuses
        if operation["x-required-scope"] == "private":
            assert "403" in statuses
    else:
        assert "x-required-scope" not in operation
    if "requestBody" in operation:
        assert {"400", "413"} <= statuses
    for name in re.findall(r"\{([^}]+)\}", path):
        assert any(p["name"] == name and p["in"] == "path" and p["required"] for p in operation["parameters"]), name
    for status, response in operation["responses"].items():
        assert response["description"], (key, status)
        assert len(response["content"]) >= 1, (key, status)  # more than one: chosen by Accept


def test_every_reference_resolves():
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(DOCUMENT)
    assert refs
    schemas = DOCUMENT["components"]["schemas"]
    for ref in refs:
        prefix, _, name = ref.rpartition("/")
        assert prefix == "#/components/schemas" and name in schemas, ref


def fake_response(method: str, path: str, status: int, content: bytes, content_type: str) -> httpx.Response:
    request = httpx.Request(method, f"http://testserver{path}")
    return httpx.Response(status, content=content, headers={"content-type": content_type}, request=request)


ERROR_BODY = b'{"title": "Conflict", "status": 409, "timestamp": "2026-01-01T00:00:00.000Z",' \
             b' "detail": {"code": "audience_conflict", "message": "taken"}}'


def test_the_response_check_accepts_what_is_documented():
    check_response_is_documented(fake_response("POST", "/v3/segments/a", 409, ERROR_BODY, "application/json"))
    not_found = ERROR_BODY.replace(b"409", b"404")
    check_response_is_documented(fake_response("GET", "/nowhere", 404, not_found, "application/json"))


@pytest.mark.parametrize(
    "response",
    [
        fake_response("GET", "/v3/segments/a", 409, ERROR_BODY, "application/json"),  # GET has no 409
        fake_response("POST", "/v3/segments/a", 409, ERROR_BODY, "text/plain"),
        fake_response("POST", "/v3/segments/a", 409, b'{"error": "taken"}', "application/json"),
        fake_response("POST", "/v3/segments/a", 409, ERROR_BODY.replace(b".000Z", b""), "application/json"),
    ],
    ids=["undocumented status", "wrong content type", "not the error shape", "timestamp without millis and Z"],
)
def test_the_response_check_catches_drift(response):
    with pytest.raises(AssertionError):
        check_response_is_documented(response)
