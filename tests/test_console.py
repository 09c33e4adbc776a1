"""The console (``GET /console``, pyapp/web/console/): its files ship in the package (uPlot as npm has it, with its
licence) and are served with a Content-Security-Policy; a real headless Chromium loads it from a live
``passthrough serve`` with known data, every request to another host refused, and shows the numbers the API
answers (which equal literal expectations); the key given in the URL fragment stays in the tab's sessionStorage
and never reaches the server in a URL. A screenshot goes to build/console.png."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import httpx
import psycopg
import pytest
from http_helpers import create_key
from live_server import serving
from playwright.sync_api import Browser, Page, Route, sync_playwright
from sqlhelpers import at
from starlette.testclient import TestClient

from pyapp.web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("PASSTHROUGH_TEST_CHROMIUM", "/usr/bin/chromium")
# uPlot's files as npm ships them (uplot@1.6.32, dist/), by the URL each is served at
SHIPPED = {
    "/console/assets/uplot-1.6.32/uPlot.iife.min.js": "Gx3t0zdBAuQOuvvmaLZj7HKEiSgWTAs+VdtNY7wt19QDPTDQjFIwAuXDj0zeN00c",
    "/console/assets/uplot-1.6.32/uPlot.min.css": "IfV0B7MIOYuO95kO9G5ySKPz/85zqFNOAs8iy4tkK5zd9izhJAB8b7lHrwYqqmYE",
}


def sha384(data: bytes) -> str:
    return base64.b64encode(hashlib.sha384(data).digest()).decode()


@pytest.fixture(scope="module")
def app_client() -> TestClient:
    """The app without its lifespan: the page and its files need no database."""
    return TestClient(create_app("postgresql://unused@/none"))


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if self.tags and self.tags[-1][0] == "script":
            self.script_text += data.strip()


def test_the_page_is_static_with_a_strict_policy_and_loads_only_its_own_files(app_client):
    response = app_client.get("/console")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "connect-src 'self';" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy and response.headers["referrer-policy"] == "no-referrer"
    page = Tags()
    page.feed(response.text)
    assert page.script_text == ""  # no inline script: the policy would refuse it, and no secret is in the page
    assert all("style" not in attrs for _, attrs in page.tags) and "<style" not in response.text
    files = [attrs.get("src") or attrs.get("href") for tag, attrs in page.tags if tag in ("script", "link")]
    assert len(files) == 4 and all(url.startswith("/console/assets/") for url in files)
    for tag, attrs in page.tags:
        if tag in ("script", "link"):  # each names its file's hash, and the file has it
            served = app_client.get(attrs.get("src") or attrs["href"], headers={"accept-encoding": "identity"})
            assert served.status_code == 200 and attrs["integrity"] == "sha384-" + sha384(served.content)
    assert set(SHIPPED) <= set(files)


@pytest.mark.parametrize("path", SHIPPED)
def test_uplot_is_the_npm_file_plain_or_gzipped(app_client, path):
    plain = app_client.get(path, headers={"accept-encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    assert sha384(plain.content) == SHIPPED[path]
    assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"
    zipped = app_client.get(path, headers={"accept-encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and sha384(zipped.content) == SHIPPED[path]
    assert int(zipped.headers["content-length"]) < len(plain.content)


@pytest.mark.parametrize("path", ["/console/assets/uplot-1.6.31/uPlot.iife.min.js",
                                  "/console/assets/uplot-1.6.32/uPlot.iife.js",
                                  "/console/assets/uplot-1.6.32/LICENSE.uplot",
                                  "/console/assets/uplot-1.6.32/console.html",
                                  "/console/assets/uplot-1.6.32/..%2F..%2Fpage.py"])
def test_anything_else_under_assets_is_404(app_client, path):
    response = app_client.get(path)
    assert response.status_code == 404
    if "%2F" not in path:  # the assets route answers, naming what it has not (the router refuses the other)
        assert response.json()["detail"]["message"] == "the console has no file " + path.removeprefix("/console/assets/")


def test_the_licence_ships_in_the_package():
    import pyapp.web.console

    folder = Path(pyapp.web.console.__file__).parent / "static"
    assert "MIT License" in (folder / "LICENSE.uplot").read_text()
    assert "uplot@1.6.32" in (folder / "ASSETS.md").read_text()


# --------------------------------------------------------------------------- in a real browser


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def apply(conn: psycopg.Connection, identifier: str, audience_id: str, action: str, ts: float) -> None:
    conn.execute("SELECT passthrough.apply_event('fs_user_id', %s, %s, %s, %s::numeric)",
                 (identifier, audience_id, action, ts))


def known_data(conn: psycopg.Connection) -> None:
    """gold: u1, u2, u3 enter 5 hours ago, u4 3 hours ago, u2 leaves 2 hours ago; silver (a ttl of 30 days,
    revision 2): u1 enters 4 hours ago; bronze: nobody. Each event its own batch, so the order of the changes
    is the order below."""
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.create_audience('gold', 'crm-gold')")
    conn.execute("SELECT passthrough.create_audience('silver', 'crm-silver', p_ttl => interval '30 days')")
    conn.execute("SELECT passthrough.put_audience('silver', 'crm-silver', 'Silver tier', '{}', interval '30 days')")
    conn.execute("SELECT passthrough.create_audience('bronze', 'crm-bronze')")
    apply(conn, "u1", "crm-gold", "qualify", at(-300))
    apply(conn, "u2", "crm-gold", "qualify", at(-290))
    apply(conn, "u3", "crm-gold", "qualify", at(-280))
    apply(conn, "u4", "crm-gold", "qualify", at(-180))
    apply(conn, "u2", "crm-gold", "disqualify", at(-120))
    apply(conn, "u1", "crm-silver", "qualify", at(-240))


def texts(page: Page, selector: str) -> list[list[str]]:
    """The cells of each row the selector finds, as shown."""
    return page.eval_on_selector_all(selector, "rows => rows.map(r => Array.from(r.cells, c => c.textContent))")


def utc_text(seconds: float) -> str:
    """As the console shows a time: UTC, to the second, or to the millisecond when it has some."""
    moment = datetime.fromtimestamp(seconds, UTC)
    millis = round(moment.microsecond / 1000)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (f".{millis:03}" if millis else "")


def distinct_colours_and_ink(browser: Browser, png: bytes) -> tuple[int, float]:
    """How many distinct colours a PNG has, and the share of its pixels that are not near white: decoded by the
    browser's own PNG decoder, in a page of its own."""
    page = browser.new_page()
    try:
        return tuple(page.evaluate("""async (data) => {
            const image = new Image();
            image.src = "data:image/png;base64," + data;
            await image.decode();
            const canvas = document.createElement("canvas");
            canvas.width = image.width; canvas.height = image.height;
            const context = canvas.getContext("2d");
            context.drawImage(image, 0, 0);
            const pixels = context.getImageData(0, 0, image.width, image.height).data;
            const colours = new Set();
            let ink = 0;
            for (let i = 0; i < pixels.length; i += 4) {
                colours.add((pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2]);
                if (pixels[i] < 235 || pixels[i + 1] < 235 || pixels[i + 2] < 235) ink++;
            }
            return [colours.size, ink / (pixels.length / 4)];
        }""", base64.b64encode(png).decode()))
    finally:
        page.close()


def test_the_console_shows_what_the_api_answers(conn: psycopg.Connection, db_url: str, tmp_path: Path,
                                                browser: Browser):
    known_data(conn)
    private, public = create_key(conn, "console", "private"), create_key(conn, "console-web", "public")
    with serving(db_url, tmp_path, "--access-log") as server:
        api = httpx.Client(base_url=server, headers={"x-api-key": private}, timeout=30)

        def graphql(query: str, variables: dict | None = None) -> dict:
            answer = api.post("/v3/graphql", json={"query": query, "variables": variables or {}}).json()
            assert "errors" not in answer, answer
            return answer["data"]

        page = browser.new_page(viewport={"width": 1200, "height": 900})
        elsewhere: list[str] = []
        requested: list[str] = []

        def only_the_server(route: Route) -> None:
            requested.append(route.request.url)
            if route.request.url.startswith(server + "/"):
                route.continue_()
            else:  # offline: a CDN or any other host is unreachable
                elsewhere.append(route.request.url)
                route.abort()

        page.route("**/*", only_the_server)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(f"{server}/console#key={private}")
        page.wait_for_selector("#audiences[data-loaded='true']", state="attached", timeout=30_000)

        # the key: out of the address bar, in this tab's session only, and never in a URL the browser asked for
        assert page.url == f"{server}/console"
        assert page.evaluate("sessionStorage.getItem('passthrough-console-key')") == private
        assert page.evaluate("localStorage.length") == 0
        assert not [url for url in requested if private in url]

        # every audience: literal expectations, which the API answers too
        shown = texts(page, "#audiences tbody tr")
        assert shown == [["bronze", "0", "1", "yes", "none"],
                         ["gold", "3", "1", "yes", "none"],
                         ["silver", "1", "2", "yes", "30 d"]]
        listed = graphql("{ audiences(first: 100) { edges { node { name size revision is_ready } } } }")
        assert [[a["name"], str(a["size"]), str(a["revision"]), "yes" if a["is_ready"] else "no"]
                for a in (edge["node"] for edge in listed["audiences"]["edges"])] == [row[:4] for row in shown]
        ttl_seconds = page.eval_on_selector_all("#audiences .ttl", "cells => cells.map(c => c.dataset.seconds)")
        assert ttl_seconds == ["", "", "2592000"]
        assert [api.get(f"/v3/segments/{name}").json()["ttl_seconds"] for name in ("bronze", "gold", "silver")] == [
            None, None, 2592000]

        # one audience: its size over 48 hours, its latest changes
        page.click("#audiences tr[data-audience='gold'] button")
        page.wait_for_selector("#history[data-loaded='true']", state="attached", timeout=30_000)
        page.wait_for_selector("#changes[data-loaded='true']", state="attached", timeout=30_000)
        assert page.text_content("#audience-name") == "gold"
        summary = [page.text_content(f"#history-{part}") for part in ("size-start", "size-end", "entered", "exited")]
        assert summary == ["0", "3", "4", "1"]
        window = page.eval_on_selector("#history", "t => [Number(t.dataset.from), Number(t.dataset.to), t.dataset.bucket]")
        assert window[2] == "hour" and window[1] - window[0] == 47 * 3600
        buckets = graphql("query($f: Float!, $t: Float!) { size_history(audience: \"gold\", from: $f, to: $t, "
                          "bucket: \"hour\") { start end size_at_start entered exited size_at_end } }",
                          {"f": window[0], "t": window[1]})["size_history"]
        assert len(buckets) == 48
        assert texts(page, "#history tbody tr") == [
            [utc_text(b["start"]), utc_text(b["end"]), str(b["size_at_start"]), str(b["entered"]), str(b["exited"]),
             str(b["size_at_end"])] for b in buckets]
        assert (sum(b["entered"] for b in buckets), sum(b["exited"] for b in buckets)) == (4, 1)
        assert page.eval_on_selector_all("#chart canvas", "c => c.length") >= 1

        changes = texts(page, "#changes tbody tr")
        assert [[row[1], row[2], row[3], row[4]] for row in changes] == [
            ["exited", "fs_user_id", "u2", "sql"], ["entered", "fs_user_id", "u4", "sql"],
            ["entered", "fs_user_id", "u3", "sql"], ["entered", "fs_user_id", "u2", "sql"],
            ["entered", "fs_user_id", "u1", "sql"]]
        answered = api.get("/v3/segments/gold/changes", params={"limit": 20}).json()["changes"]
        assert [[utc_text(datetime.fromisoformat(c["event_ts"]).timestamp()), c["change"], c["identifier"]]
                for c in answered] == [[row[0], row[1], row[3]] for row in changes]
        assert changes[0][0] == utc_text(at(-120))

        # 30 days by day: the same moves
        page.select_option("#window", "30d")
        page.wait_for_selector("#history[data-loaded='true'][data-bucket='day']", state="attached", timeout=30_000)
        assert [page.text_content(f"#history-{p}") for p in ("size-end", "entered", "exited")] == ["3", "4", "1"]
        assert len(texts(page, "#history tbody tr")) == 30
        page.select_option("#window", "48h")
        page.wait_for_selector("#history[data-loaded='true'][data-bucket='hour']", state="attached", timeout=30_000)

        # which audiences is a user in, now and at a past time
        def look_up(identifier: str, when: str) -> tuple[str, list[str]]:
            page.fill("#lookup-id", identifier)
            page.fill("#lookup-at", when)
            page.evaluate("delete document.getElementById('lookup-audiences').dataset.loaded")
            page.click("#lookup-form button")
            page.wait_for_selector("#lookup-audiences[data-loaded]", state="attached", timeout=30_000)
            return page.text_content("#lookup-result"), page.eval_on_selector_all(
                "#lookup-audiences li", "items => items.map(i => i.textContent)")

        def api_lookup(identifier: str, seconds: float | None) -> list[str]:
            data = graphql("query($id: String, $at: Float) { customer(fs_user_id: $id) { audiences(at: $at) "
                           "{ edges { node { name } } } } }", {"id": identifier, "at": seconds})
            return [edge["node"]["name"] for edge in data["customer"]["audiences"]["edges"]]

        assert page.input_value("#lookup-type") == "fs_user_id"
        assert look_up("u1", "") == ("fs_user_id u1 is in 2 audiences now:", ["gold", "silver"])
        assert api_lookup("u1", None) == ["gold", "silver"]
        assert look_up("u2", "") == ("fs_user_id u2 is in no audience now.", [])
        assert api_lookup("u2", None) == []
        past = int(at(-150))  # after u2 entered gold, before it left
        past_text = datetime.fromtimestamp(past, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert look_up("u2", past_text) == (f"fs_user_id u2 is in 1 audience at {utc_text(past)} UTC:", ["gold"])
        assert api_lookup("u2", past) == ["gold"]

        (ROOT / "build").mkdir(exist_ok=True)
        png = page.screenshot(full_page=True, path=str(ROOT / "build" / "console.png"))
        colours, ink = distinct_colours_and_ink(browser, png)
        assert colours >= 20 and ink >= 0.05, (colours, ink)
        assert look_up("u2", "yesterday-ish")[0].startswith("at: not a time: yesterday-ish")

        # a public key: sizes and lookups; the TTLs and the changes say they need a private key
        page.click("#forget")
        assert page.evaluate("sessionStorage.length") == 0
        page.fill("#key", public)
        page.click("#key-form button[type='submit']")
        page.wait_for_selector("#audiences[data-loaded='true']", state="attached", timeout=30_000)
        assert [row[:4] for row in texts(page, "#audiences tbody tr")] == [row[:4] for row in shown]
        assert [row[4] for row in texts(page, "#audiences tbody tr")] == ["needs a private key"] * 3
        page.click("#audiences tr[data-audience='gold'] button")
        page.wait_for_selector("#changes[data-loaded='error']", state="attached", timeout=30_000)
        assert page.text_content("#changes-note") == "The latest entries and exits need a private key."
        page.wait_for_selector("#history[data-loaded='true']", state="attached", timeout=30_000)
        assert page.text_content("#history-size-end") == "3"
        # a key the server does not know: the page says what the API said
        page.fill("#key", "not-a-key")
        page.click("#key-form button[type='submit']")
        page.wait_for_selector("#status.error", state="attached", timeout=30_000)
        assert page.text_content("#status").startswith("401: ")
        assert texts(page, "#audiences tbody tr") == [] and page.is_hidden("#audience")

        # a #key=... given to the open page replaces the key, and leaves the address bar too
        page.evaluate("key => { window.location.hash = 'key=' + key; }", private)
        page.wait_for_selector("#audiences tr[data-audience='silver'] .ttl:text-is('30 d')", timeout=30_000)
        assert page.url == f"{server}/console"
        assert page.evaluate("sessionStorage.getItem('passthrough-console-key')") == private
        assert page.evaluate("localStorage.length") == 0
        assert not [url for url in requested if private in url or public in url]
        assert elsewhere == []
        # Chromium logs each refused fetch
        assert [e for e in errors if "status of 403" not in e and "status of 401" not in e] == []
    # the access log has every request the page made, and neither key
    log = "\n".join(path.read_text(errors="replace") for path in tmp_path.glob("serve-*.log"))
    assert "GET /console HTTP" in log and "/v3/segments/gold/changes?limit=20" in log
    assert private not in log and public not in log
