"""The console: GET /console and the files it loads."""

from __future__ import annotations

from typing import Any

from pyapp.web.openapi.parts import error, operation

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
        "get": operation(
            "consoleAsset",
            "A file of the console (uPlot, the console's script and stylesheet), shipped with the server.",
            description="The versions and licences: pyapp/web/console/static/ASSETS.md. Gzipped when the client "
            "accepts it; cacheable for ever (the version is in the path).",
            scope=None,
            parameters=[
                {"name": "version", "in": "path", "required": True, "schema": {"type": "string"},
                 "description": "The package and version, e.g. `uplot-1.6.32`."},
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
                 "description": "The file, e.g. `uPlot.iife.min.js`."},
            ],
            responses={
                "200": {"description": "The file.", "content": {
                    "text/javascript": {"schema": {"type": "string"}}, "text/css": {"schema": {"type": "string"}}}},
                "404": error("No such file."),
            },
        ),
    },
}

SCHEMAS: dict[str, Any] = {}
