"""The console: GET /console and the files it loads."""

from __future__ import annotations

from typing import Any

from pyapp.web.openapi.parts import operation, shipped_file

PATHS: dict[str, Any] = {
    "/console": {
        "get": operation(
            "console",
            "The console: audiences, their size over time, their latest changes, and a membership lookup.",
            description="A static page; its script asks this API with the key typed into it (or given as "
            "`#key=...` in the URL fragment, which the browser never sends), kept in the tab's sessionStorage. A "
            "public key shows sizes, charts and lookups; the TTLs and the latest changes need a private key.",
            scope=None,
            responses={
                "200": {"description": "The console page.", "content": {"text/html": {"schema": {"type": "string"}}}}
            },
        ),
    },
    "/console/assets/{version}/{name}": {
        "get": shipped_file(
            "consoleAsset",
            "A file of the console (uPlot, the console's script and stylesheet), shipped with the server.",
            "pyapp/web/console/static", "uplot-1.6.32", "uPlot.iife.min.js"),
    },
}

SCHEMAS: dict[str, Any] = {}
