"""The Optimizely JavaScript SDK's browser build in a real headless Chromium against a running Passthrough.

tests/browser/ pins ``@optimizely/optimizely-sdk`` (package.json and package-lock.json; ``make test`` runs
``npm ci`` there when node_modules is missing) and holds index.html, a site that loads the SDK's UMD browser
bundle with a script tag. That page is served from one port and ``passthrough serve`` listens on another, so
every SDK call is cross-origin: Chromium sends CORS preflights and refuses any answer without the right
headers. The site does what a real one must (README, "In a web page"): the
datafile carries a public key, passthrough events from public keys are allowed
(``public_passthrough_events``) and the server names the site's origin (``--cors-origins``).

What only the browser build exercises: the vuid manager (a visitor id kept in localStorage) is on, so the
SDK adds ``vuid`` to the identifiers of every ODP event and asks ``customer(vuid: ...)`` for an anonymous
visitor. Playwright for Python drives the system's Chromium (``/usr/bin/chromium``, the Debian package
.ci/run installs; Playwright downloads no browser). Without it the test fails: it never skips.

The SDK sends each ODP event in a batch of one (``eventBatchSize: 1``); the test awaits the 202 that
answers that very request (Passthrough answers 202 only after the batch is committed) before it asks
for segments, so nothing is left to timing.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from http_helpers import create_key
from live_server import free_port, serving
from playwright.sync_api import Browser, Page, Request, Response, sync_playwright

SITE_DIR = Path(__file__).resolve().parent / "browser"
SDK_BUNDLE = SITE_DIR / "node_modules/@optimizely/optimizely-sdk/dist/optimizely.browser.umd.min.js"
CHROMIUM = os.environ.get("PASSTHROUGH_TEST_CHROMIUM", "/usr/bin/chromium")
TS = 1_700_000_000
USER = "browser-user-1"
# segment name -> the CDP's audience id; the datafile asks about seg_bronze too, which Passthrough does not define
SEGMENTS = {"seg_gold": "crm-gold", "seg_silver": "crm-silver"}
ASKED = ["seg_gold", "seg_silver", "seg_bronze"]


def datafile(host: str, public_key: str) -> str:
    """The smallest datafile the SDK takes: the odp integration and one audience per segment it asks about."""
    audiences = [
        {"id": str(1000 + i), "name": f"in {segment}", "conditions": ["and", ["or", ["or", {
            "type": "third_party_dimension", "name": "odp.audiences", "match": "qualified", "value": segment}]]]}
        for i, segment in enumerate(ASKED)
    ]
    return json.dumps({
        "version": "4", "accountId": "1", "projectId": "1", "revision": "1",
        "experiments": [], "featureFlags": [], "rollouts": [], "groups": [], "attributes": [], "events": [],
        "audiences": [], "typedAudiences": audiences,
        "integrations": [{"key": "odp", "host": host, "publicKey": public_key}],
    })


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    """tests/browser/ served on its own port: the site's origin, another than Passthrough's."""
    if not SDK_BUNDLE.is_file():
        pytest.fail(f"no {SDK_BUNDLE.relative_to(SITE_DIR.parent.parent)}: run `npm ci --prefix tests/browser` "
                    "(`make test` does when tests/browser/node_modules is missing)")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()),
                                            functools.partial(_QuietHandler, directory=str(SITE_DIR)))
    thread = threading.Thread(target=httpd.serve_forever, name="browser-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM}: install the Debian package (apt-get install -y chromium; "
                    ".ci/run does) or set PASSTHROUGH_TEST_CHROMIUM to a Chromium binary")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def events_answer(page: Page, server: str, kind: tuple[str, str], script: str, *args: Any) -> tuple[Any, Response]:
    """Run ``script`` in the page; its result and the answer to the SDK's POST /v3/events that carried the
    event of that (type, action)."""
    def is_it(response: Response) -> bool:
        request = response.request
        return (request.method == "POST" and response.url == f"{server}/v3/events"
                and any((e.get("type"), e.get("action")) == kind for e in request.post_data_json))

    with page.expect_response(is_it, timeout=10_000) as answer:
        result = page.evaluate(script, *args)
    return result, answer.value


def qualified_in_db(conn: psycopg.Connection, user: str) -> list[str]:
    return [name for (name,) in conn.execute(
        "SELECT name FROM passthrough.customer_audiences('fs_user_id', %s)", (user,)).fetchall()]


def test_the_browser_sdk_in_chromium_qualifies_and_disqualifies_across_origins(
    conn: psycopg.Connection, db_url: str, tmp_path: Path, site: str, browser: Browser
):
    conn.execute("SELECT passthrough.enable()")
    conn.execute("SELECT passthrough.set_setting('public_passthrough_events', 'on')")  # as such a site must
    for segment, external_id in SEGMENTS.items():
        conn.execute("SELECT passthrough.create_audience(%s, %s)", (segment, external_id))
    public_key = create_key(conn, "web", "public")

    # --access-log: the preflights are checked in the server's log
    with serving(db_url, tmp_path, "--cors-origins", site, "--access-log") as server:
        assert site != server  # two origins: the SDK's calls are cross-origin
        page = browser.new_page()
        requests: list[Request] = []
        page.on("request", lambda request: requests.append(request))
        page_errors: list[str] = []
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        page.goto(f"{site}/index.html")
        try:
            # once ready, the SDK announces the new visitor: an event with the vuid alone (acknowledged, not stored)
            started, initialized = events_answer(page, server, ("fullstack", "client_initialized"),
                                                 "df => site.start(df)", datafile(server, public_key))
            vuid = started["vuid"]
            assert re.fullmatch(r"vuid_[0-9a-f]{27}", vuid), vuid
            assert started["odpIntegrated"] is True
            assert initialized.status == 202
            assert [e["identifiers"] for e in initialized.request.post_data_json] == [{"vuid": vuid}]

            # nobody qualified yet: an empty answer, not a failure
            assert page.evaluate(f"site.segments({USER!r})") == {"userId": USER, "ok": True, "segments": []}

            _, qualify = events_answer(page, server, ("passthrough", "qualify"),
                                       f"site.send('qualify', {USER!r}, 'crm-gold', {TS})")
            assert qualify.status == 202
            assert qualify.headers["access-control-allow-origin"] == site
            sent = [e for e in qualify.request.post_data_json if e["type"] == "passthrough"]
            assert len(sent) == 1
            # the SDK added the visitor's vuid beside the user id; the server keyed the event by fs_user_id
            assert sent[0]["identifiers"] == {"fs_user_id": USER, "vuid": vuid}
            assert sent[0]["data"]["audience_id"] == "crm-gold" and sent[0]["data"]["ts"] == TS
            assert qualify.json()["accepted"] == 1 and qualify.json()["changed"] == 1
            assert qualified_in_db(conn, USER) == ["seg_gold"]
            assert page.evaluate(f"site.segments({USER!r})") == {"userId": USER, "ok": True, "segments": ["seg_gold"]}

            # the anonymous visitor (user id = the vuid) is asked about with customer(vuid: ...): the vuid keys
            # no membership, so the answer is empty, not an error, though its events carried that vuid
            assert page.evaluate("site.segments(null)") == {"userId": vuid, "ok": True, "segments": []}

            _, disqualify = events_answer(page, server, ("passthrough", "disqualify"),
                                          f"site.send('disqualify', {USER!r}, 'crm-gold', {TS + 1})")
            assert disqualify.status == 202
            assert disqualify.json()["accepted"] == 1 and disqualify.json()["changed"] == 1
            assert qualified_in_db(conn, USER) == []
            assert page.evaluate(f"site.segments({USER!r})") == {"userId": USER, "ok": True, "segments": []}
        finally:
            logs = page.evaluate("async () => { if (!window.site) return []; await site.close(); return site.logs(); }")
            page.close()
            print("SDK log:", *logs, sep="\n  ")  # shown when the test fails
        serve_log = (tmp_path / f"serve-{server.rsplit(':', 1)[1]}.log").read_text(errors="replace")

    assert page_errors == []
    assert [entry for entry in logs if entry[0] in ("warn", "error")] == []
    # the page talked to its own origin and to Passthrough, nothing else (no decision events, no datafile CDN)
    assert {re.match(r"https?://[^/]+", r.url).group(0) for r in requests} == {site, server}
    # what fetchQualifiedSegments asked: the datafile's segments, with the values written into the query
    asked = '{audiences(subset: ["seg_gold","seg_silver","seg_bronze"]) {edges {node {name state}}}}}'
    for_user = f'query {{customer(fs_user_id : "{USER}") {asked}'
    for_visitor = f'query {{customer(vuid : "{vuid}") {asked}'
    queries = [json.loads(r.post_data)["query"] for r in requests if r.url == f"{server}/v3/graphql"]
    assert queries == [for_user, for_user, for_visitor, for_user]
    # every event the SDK sent, each once (a refused one would have been retried): its client_initialized and
    # the two passthrough events. No identified event: the SDK sends one only with two identifiers, and
    # createUserContext gives it the user id alone.
    sent_events = sorted((e["type"], e["action"]) for r in requests if r.url == f"{server}/v3/events"
                         for e in json.loads(r.post_data))
    assert sent_events == [("fullstack", "client_initialized"), ("passthrough", "disqualify"),
                           ("passthrough", "qualify")]
    # Chromium asked before each cross-origin POST (preflights are cached 10 minutes: one per URL)
    assert '"OPTIONS /v3/events HTTP/1.1" 200' in serve_log
    assert '"OPTIONS /v3/graphql HTTP/1.1" 200' in serve_log
    # every passthrough event the page sent was stored once, with the SDK's idempotence_id
    stored = conn.execute("SELECT count(*), count(DISTINCT idempotence_id) FROM passthrough.events").fetchone()
    assert stored == (2, 2)
