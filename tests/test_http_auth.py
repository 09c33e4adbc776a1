"""API keys over HTTP: every route's scope, 401/403, revocation, and auth before anything else."""

from __future__ import annotations

import re

import pytest
from http_helpers import json_headers, make_client, openapi_path
from sqlhelpers import event
from starlette.routing import Mount, Route

from pyapp.web import ApiConfig, create_app
from pyapp.web.openapi.document import DOCUMENT

pytest_plugins = ["http_fixtures"]

# Every operation the app serves (HEAD aside) and the key it needs, written out: None (no key: the probes and
# the API description must work without one, see pyapp/web/health.py, and the GraphiQL page and its assets are
# static, the queries it sends need a key), "public" (any key) or "private".
ROUTE_SCOPES: dict[tuple[str, str], str | None] = {
    ("/healthz", "GET"): None,
    ("/readyz", "GET"): None,
    ("/openapi.json", "GET"): None,
    ("/metrics", "GET"): "private",  # by default; passthrough serve --metrics-auth (tests/test_http_metrics.py)
    ("/v3/events", "POST"): "public",
    ("/v3/audiences/{audience_id}/snapshot", "POST"): "private",
    ("/v3/changes", "GET"): "private",
    ("/v3/segments", "GET"): "private",
    ("/v3/segments/{segment_id}:validate", "POST"): "private",
    ("/v3/segments/{segment_id}/members", "GET"): "private",
    ("/v3/segments/{segment_id}/changes", "GET"): "private",
    ("/v3/segments/{segment_id}", "GET"): "private",
    ("/v3/segments/{segment_id}", "POST"): "private",
    ("/v3/segments/{segment_id}", "PUT"): "private",
    ("/v3/segments/{segment_id}", "DELETE"): "private",
    ("/v3/graphql", "GET"): None,
    ("/v3/graphql", "POST"): "public",
    ("/v3/graphql/assets/{version}/{name}", "GET"): None,
    ("/console", "GET"): None,  # static, as GraphiQL's page: the API calls it makes need a key
    ("/console/assets/{version}/{name}", "GET"): None,
}
OPERATIONS = sorted(ROUTE_SCOPES)


def app_operations() -> list[tuple[str, str]]:
    """(path template, method) for every route the app serves, HEAD aside."""
    operations = []
    for route in create_app("postgresql://unused@/none").routes:
        if isinstance(route, Route):
            operations += [(openapi_path(route.path), method) for method in sorted(route.methods or ())
                           if method != "HEAD"]
        elif isinstance(route, Mount):  # an ASGI app mounted whole: its methods are the documented ones
            documented = DOCUMENT["paths"].get(route.path, {})
            assert documented, f"mounted {route.path} is not in the OpenAPI document"
            operations += [(route.path, method.upper()) for method in documented]
        else:
            raise AssertionError(f"unexpected route type {route!r}")
    return operations


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def documented_scope(path: str, method: str) -> str | None:
    """What the OpenAPI document says an operation needs: None for no security, else x-required-scope."""
    operation = DOCUMENT["paths"][path][method.lower()]
    if operation["security"] == []:
        assert "x-required-scope" not in operation, (path, method)
        return None
    assert operation["security"] == [{"ApiKey": []}], (path, method)
    return operation["x-required-scope"]


def error_code(response) -> str:
    """detail.code of the HTTP API's errors, or extensions.code of GraphQL's, lower case."""
    body = response.json()
    return body["detail"]["code"] if "detail" in body else body["errors"][0]["extensions"]["code"].lower()


def test_the_app_serves_exactly_the_operations_written_out():
    served = app_operations()
    assert len(served) == len(set(served))
    assert set(served) == set(ROUTE_SCOPES)


def test_the_openapi_document_states_each_operations_scope_as_written_out():
    documented = {(path, method.upper()) for path, operations in DOCUMENT["paths"].items() for method in operations}
    assert documented == set(ROUTE_SCOPES)
    assert {op: documented_scope(*op) for op in ROUTE_SCOPES} == ROUTE_SCOPES


@pytest.mark.parametrize("path, method", OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_every_route_enforces_its_scope(client, public_key, private_key, path, method):
    url, scope = concrete(path), ROUTE_SCOPES[path, method]

    def status(headers):
        return client.request(method, url, headers=headers).status_code

    if scope is None:
        assert status({}) not in (401, 403)
        assert status({"x-api-key": "pt_private_" + "0" * 64}) not in (401, 403)  # a bad key is not looked at
        return
    missing = client.request(method, url)
    assert missing.status_code == 401 and error_code(missing) == "missing_api_key"
    unknown = client.request(method, url, headers={"x-api-key": "pt_private_" + "0" * 64})
    assert unknown.status_code == 401 and error_code(unknown) == "invalid_api_key"
    with_public = client.request(method, url, headers={"x-api-key": public_key})
    if scope == "private":
        assert with_public.status_code == 403 and error_code(with_public) == "insufficient_scope"
        assert "needs a private API key" in with_public.json()["detail"]["message"]
    else:
        assert with_public.status_code not in (401, 403)
    assert status({"x-api-key": private_key}) not in (401, 403)


def test_a_private_key_may_send_events(client, enabled, private_key):
    assert client.post("/v3/events", headers=json_headers(private_key), json=[event()]).status_code == 202


def test_a_revoked_key_is_refused_from_the_next_request(client, db, make_key):
    key = make_key("admin", "private")
    assert client.get("/v3/segments", headers={"x-api-key": key}).status_code == 200
    db.execute("SELECT passthrough.revoke_api_key('admin')")
    response = client.get("/v3/segments", headers={"x-api-key": key})
    assert response.status_code == 401 and response.json()["detail"]["code"] == "invalid_api_key"


def test_the_header_name_is_case_insensitive_and_the_key_is_not(client, private_key):
    assert client.get("/v3/segments", headers={"X-API-Key": private_key}).status_code == 200
    assert client.get("/v3/segments", headers={"x-api-key": private_key.upper()}).status_code == 401
    assert client.get("/v3/segments", headers={"x-api-key": f" {private_key}x"}).status_code == 401


def test_authentication_comes_before_reading_the_body(client, enabled):
    response = client.post("/v3/events", headers={"content-type": "text/plain"}, content=b"{not json")
    assert response.status_code == 401


def test_a_missing_key_is_401_even_when_the_database_is_down(tmp_path):
    down = f"postgresql://postgres@/postgres?host={tmp_path}"
    with make_client(down, ApiConfig(pool_max_size=1, pool_timeout=0.3)) as client:
        assert client.get("/v3/segments").status_code == 401
        with_key = client.get("/v3/segments", headers={"x-api-key": "pt_private_" + "0" * 64})
        assert with_key.status_code == 503  # a key cannot be checked without the database


# --------------------------------------------------------------------------- one round trip per hot request

CUSTOMER_QUERY = {"query": "query($userId: String) { customer(fs_user_id: $userId) "
                           "{ audiences { edges { node { name state } } } } }", "variables": {"userId": "u1"}}


@pytest.fixture
def statements(monkeypatch) -> list[str]:
    """The SQL text of every statement the app's async connections execute from now on."""
    import psycopg

    seen: list[str] = []
    execute = psycopg.AsyncCursor.execute

    async def recording(self, query, params=None, **kwargs):
        seen.append(query if isinstance(query, str) else repr(query))
        return await execute(self, query, params, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", recording)
    return seen


def hot(statements: list[str]) -> list[str]:
    """The statements of requests (the app's background jobs run others meanwhile)."""
    return [s for s in statements if any(name in s for name in (
        "_require_api_key", "authenticate_api_key", "apply_events", "customer_audiences"))]


def test_a_key_this_worker_knows_costs_no_round_trip_of_its_own(client, enabled, make_key, statements):
    key = make_key("app", "private")
    assert client.post("/v3/events", headers=json_headers(key), json=[event()]).status_code == 202
    assert [s.split("(")[0] for s in hot(statements)] == [  # a new key: checked first, then the work
        "SELECT passthrough._require_api_key", "SELECT accepted, ignored, changed FROM passthrough.apply_events"]
    for path, body in (("/v3/events", [event()]), ("/v3/graphql", CUSTOMER_QUERY)):
        statements.clear()
        assert client.post(path, headers=json_headers(key), json=body).status_code in (200, 202)
        (statement,) = hot(statements)  # one statement, which checks the key itself
        assert "passthrough._require_api_key(%s, 'public')" in statement


@pytest.mark.parametrize("path, body", [("/v3/events", [event()]), ("/v3/graphql", CUSTOMER_QUERY),
                                        ("/v3/graphql", {"query": "{ __typename }"})])
def test_a_known_key_revoked_is_refused_from_the_next_request(client, db, enabled, make_key, path, body):
    key = make_key("app", "private")
    assert client.post(path, headers=json_headers(key), json=body).status_code in (200, 202)
    assert client.post(path, headers=json_headers(key), json=body).status_code in (200, 202)  # known now
    db.execute("SELECT passthrough.revoke_api_key('app')")
    for _ in range(2):  # refused by the request's own statement, then forgotten and refused by the check
        response = client.post(path, headers=json_headers(key), json=body)
        assert response.status_code == 401 and error_code(response) == "invalid_api_key"
    stored = db.execute("SELECT count(*) FROM passthrough.events").fetchone()[0]
    assert stored == (2 if path == "/v3/events" else 0)  # nothing stored after the revocation
