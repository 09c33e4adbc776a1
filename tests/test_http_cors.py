"""CORS (pyapp/web/cors.py): browsers may call the public-key routes from any site by default (ODP's browser
SDK runs on any site); the routes that need a private key answer no browser unless configured."""

from __future__ import annotations

import dataclasses

import pytest
from http_helpers import TEST_CONFIG, make_client
from sqlhelpers import event

from pyapp.web import ApiConfig

pytest_plugins = ["http_fixtures"]

SITE = "https://shop.example.com"
SDK_QUERY = {"query": "query($userId: String) {customer(fs_user_id: $userId) {audiences(subset: []) "
             "{edges {node {name state}}}}}", "variables": {"userId": "user-1"}}


def preflight(client, path: str, method: str = "POST", origin: str = SITE):
    return client.options(path, headers={"Origin": origin, "Access-Control-Request-Method": method,
                                         "Access-Control-Request-Headers": "content-type,x-api-key"})


@pytest.mark.parametrize("path", ["/v3/events", "/v3/graphql"])
def test_a_preflight_to_a_public_key_route_is_answered_for_any_origin(client, path):
    response = preflight(client, path)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert {"GET", "POST"} <= {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
    assert {"content-type", "x-api-key"} <= {h.strip().lower() for h in
                                              response.headers["access-control-allow-headers"].split(",")}
    assert int(response.headers["access-control-max-age"]) == 600


def test_the_browser_sdks_requests_carry_the_allow_origin_header(client, enabled, public_key):
    enabled.execute("SELECT passthrough.set_setting('public_passthrough_events', 'on')")  # as such a site must
    headers = {"Origin": SITE, "x-api-key": public_key}
    sent = client.post("/v3/events", json=[event(identifiers={"fs_user_id": "user-1"})], headers=headers)
    assert sent.status_code == 202 and sent.headers["access-control-allow-origin"] == "*"
    read = client.post("/v3/graphql", json=SDK_QUERY, headers=headers)
    assert read.status_code == 200 and read.headers["access-control-allow-origin"] == "*"
    refused = client.post("/v3/events", json=[{"type": "passthrough"}], headers=headers)  # errors too
    assert refused.status_code == 400 and refused.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("path, method", [("/v3/segments/seg_a", "PUT"), ("/v3/changes", "GET"),
                                          ("/v3/audiences/aud-1/snapshot", "POST")])
def test_private_key_routes_answer_no_browser_by_default(client, private_key, path, method):
    response = preflight(client, path, method)
    assert response.status_code == 405 and "access-control-allow-origin" not in response.headers
    plain = client.get("/v3/changes", headers={"Origin": SITE, "x-api-key": private_key})
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


@pytest.fixture
def configured(db, http_database_url):
    """A client on an app that allows the shop's pages on the public-key routes and an ops console's on the rest."""
    config = dataclasses.replace(TEST_CONFIG, cors_origins=(SITE,), cors_private_origins=("https://ops.example.com",))
    with make_client(http_database_url, config) as test_client:
        yield test_client


def test_configured_origins_only(configured, private_key):
    client = configured
    assert preflight(client, "/v3/events").headers["access-control-allow-origin"] == SITE
    other = preflight(client, "/v3/events", origin="https://evil.example.net")
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    ops = "https://ops.example.com"
    assert preflight(client, "/v3/changes", "GET", origin=ops).headers["access-control-allow-origin"] == ops
    assert preflight(client, "/v3/changes", "GET").status_code == 400  # the shop's pages may not
    feed = client.get("/v3/changes", headers={"Origin": ops, "x-api-key": private_key})
    assert feed.status_code == 200 and feed.headers["access-control-allow-origin"] == ops


@pytest.mark.parametrize("origin", ["shop.example.com", "https://shop.example.com/", "ftp://x"])
def test_an_origin_that_is_not_one_is_refused_at_start(origin):
    with pytest.raises(ValueError, match="CORS origin"):
        ApiConfig(cors_origins=(origin,))
