"""GraphiQL (``GET /v3/graphql``) works offline: React, GraphiQL and its stylesheet ship inside the package
(pyapp/web/graphql/static/graphiql, ASSETS.md) and the server serves them. A real headless Chromium loads the page from
a live ``passthrough serve`` with every request to another host refused, runs the SDK's query with a key typed
into the headers editor, and leaves no key in localStorage."""

from __future__ import annotations

import hashlib
import json
import os
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from http_helpers import create_key
from live_server import serving
from playwright.sync_api import Browser, Route, sync_playwright
from starlette.testclient import TestClient

from pyapp.web.app import create_app

CHROMIUM = os.environ.get("PASSTHROUGH_TEST_CHROMIUM", "/usr/bin/chromium")
# The files' sha384 as npm ships them (react@18.2.0, react-dom@18.2.0, graphiql@3.8.3: the hashes the CDN's
# subresource integrity used before), with the URL each is served at.
SHIPPED = {
    "/v3/graphql/assets/react-18.2.0/react.production.min.js":
        "tMH8h3BGESGckSAVGZ82T9n90ztNXxvdwvdM6UoR56cYcf+0iGXBliJ29D+wZ/x8",
    "/v3/graphql/assets/react-dom-18.2.0/react-dom.production.min.js":
        "bm7MnzvK++ykSwVJ2tynSE5TRdN+xL418osEVF2DE/L/gfWHj91J2Sphe582B1Bh",
    "/v3/graphql/assets/graphiql-3.8.3/graphiql.min.js":
        "HbRVEFG0JGJZeAHCJ9Xm2+tpknBQ7QZmNlO/DgZtkZ0aJSypT96YYGRNod99l9Ie",
    "/v3/graphql/assets/graphiql-3.8.3/graphiql.min.css":
        "Mq3vbRBY71jfjQAt/DcjxUIYY33ksal4cgdRt9U/hNPvHBCaT2JfJ/PTRiPKf0aM",
}
LICENCES = ["LICENSE.react", "LICENSE.react-dom", "LICENSE.graphiql", "ASSETS.md"]


@pytest.fixture(scope="module")
def app_client() -> TestClient:
    """The app without its lifespan: the assets need no database."""
    return TestClient(create_app("postgresql://unused@/none"))


def sha384(data: bytes) -> str:
    return b64encode(hashlib.sha384(data).digest()).decode()


@pytest.mark.parametrize("path", SHIPPED)
def test_each_asset_is_the_npm_file_plain_or_gzipped(app_client, path):
    plain = app_client.get(path, headers={"accept-encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    assert sha384(plain.content) == SHIPPED[path]
    assert plain.headers["content-type"].startswith("text/css" if path.endswith(".css") else "text/javascript")
    assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"
    zipped = app_client.get(path, headers={"accept-encoding": "gzip, deflate"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert sha384(zipped.content) == SHIPPED[path]  # httpx undoes the gzip: the same file
    assert int(zipped.headers["content-length"]) < len(plain.content)  # sent compressed


@pytest.mark.parametrize("path", ["/v3/graphql/assets/graphiql-3.8.2/graphiql.min.js",
                                  "/v3/graphql/assets/graphiql-3.8.3/graphiql.js",
                                  "/v3/graphql/assets/graphiql-3.8.3/LICENSE.graphiql",
                                  "/v3/graphql/assets/graphiql-3.8.3/..%2F..%2Fide.py"])
def test_anything_else_under_assets_is_404(app_client, path):
    assert app_client.get(path).status_code == 404


def test_the_licences_ship_in_the_package():
    import pyapp.web.graphql

    folder = Path(pyapp.web.graphql.__file__).parent / "static" / "graphiql"
    for name in LICENCES:
        assert (folder / name).stat().st_size > 500, name
    assert "MIT License" in (folder / "LICENSE.graphiql").read_text()


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def test_graphiql_runs_a_query_offline_and_keeps_no_key(conn: psycopg.Connection, db_url: str, tmp_path: Path,
                                                         browser: Browser):
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.create_audience('gold', 'crm-gold')")
    conn.execute("SELECT * FROM passthrough.apply_events(%s::jsonb, 'test')", (json.dumps([{
        "type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "ide-user"},
        "data": {"audience_id": "crm-gold"}, "ts": 1_700_000_000}]),))
    key = create_key(conn, "ide", "public")
    with serving(db_url, tmp_path) as server:
        page = browser.new_page()
        elsewhere: list[str] = []

        def only_the_server(route: Route) -> None:
            if route.request.url.startswith(server + "/"):
                route.continue_()
            else:  # offline: a CDN or any other host is unreachable
                elsewhere.append(route.request.url)
                route.abort()

        page.route("**/*", only_the_server)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{server}/v3/graphql")
        page.wait_for_selector(".graphiql-container .CodeMirror", timeout=30_000)
        editors = "document.querySelectorAll('.graphiql-container .CodeMirror')"
        # the editors in page order: query, variables, headers (pre-filled with the placeholder), result
        values = page.evaluate(f"Array.from({editors}).map(e => e.CodeMirror.getValue())")
        headers_at = next(i for i, v in enumerate(values) if "x-api-key" in v)
        page.evaluate(f"([i, text]) => {editors}[i].CodeMirror.setValue(text)",
                      [headers_at, json.dumps({"x-api-key": key})])
        page.evaluate(f"([i, text]) => {editors}[i].CodeMirror.setValue(text)",
                      [headers_at - 1, json.dumps({"userId": "ide-user", "audiences": ["gold", "silver"]})])
        with page.expect_response(lambda r: r.url == f"{server}/v3/graphql" and r.request.method == "POST"
                                  and "customer" in (r.request.post_data or "")) as answered:
            page.click("button[aria-label^='Execute query']")
        assert answered.value.status == 200
        page.wait_for_function(f"{editors}[{editors}.length - 1].CodeMirror.getValue().includes('qualified')",
                               timeout=30_000)
        shown = json.loads(page.evaluate(f"{editors}[{editors}.length - 1].CodeMirror.getValue()"))
        assert shown == {"data": {"customer": {"audiences": {"edges": [
            {"node": {"name": "gold", "state": "qualified", "description": None, "is_ready": True,
                      "revision": 1, "size": 1}}]}}}}
        stored = page.evaluate("JSON.stringify(Object.assign({}, window.localStorage))")
        assert key not in stored and "graphiql" not in stored  # GraphiQL's state lives in sessionStorage
        assert elsewhere == [] and errors == []
